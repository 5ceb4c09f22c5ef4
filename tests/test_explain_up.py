"""``kubectl explain`` against ``up``: built-ins and a CRD's kind, OpenAPI v3 and v2, kubectl 1.27 and 1.33.

kubectl 1.27 on explains from ``/openapi/v3`` (per group-version documents) and, with
``--output plaintext-openapiv2``, from the protobuf ``/openapi/v2``. Both documents carry the
``fieldValidation`` parameter, so kubectl leaves unknown-field checks to the server: an unknown
field in a custom resource is refused with the server's strict-decoding message.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests._up_process import up_process

pytestmark = pytest.mark.kubectl

BINARIES = {v: f"/usr/lib/google-cloud-sdk/bin/kubectl.{v}" for v in ("1.27", "1.33")}
CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: crontabs.stable.example.com}
spec:
  group: stable.example.com
  scope: Namespaced
  names: {plural: crontabs, singular: crontab, kind: CronTab, shortNames: [ct]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        description: A CronTab runs a command on a schedule.
        type: object
        properties:
          spec:
            type: object
            description: What to run and when.
            properties:
              cronSpec: {type: string, description: The schedule in cron format.}
              image: {type: string}
"""
CRONTAB = """
apiVersion: stable.example.com/v1
kind: CronTab
metadata: {name: typo}
spec: {cronSpec: "* * * * *", imagee: nginx}
"""


def test_explain_builtins_and_crds(tmp_path: Path) -> None:
    with up_process(tmp_path, "--shards", "0") as up:

        def run(
            version: str, *args: str, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
            cache = tmp_path / f"cache-{version}"
            return subprocess.run(
                [BINARIES[version], "--cache-dir", str(cache), *args],
                input=stdin,
                capture_output=True,
                text=True,
                env={**os.environ, "KUBECONFIG": str(up.kubeconfig)},
                timeout=60,
                check=False,
            )

        applied = run("1.33", "apply", "-f", "-", stdin=CRD)
        assert applied.returncode == 0, applied.stderr
        for version, binary in BINARIES.items():
            assert Path(binary).exists(), f"{binary} is not installed"
            spec = run(version, "explain", "deployment.spec.strategy")
            assert spec.returncode == 0, spec.stderr
            assert "KIND:       Deployment" in spec.stdout
            assert "rollingUpdate\t<RollingUpdateDeployment>" in spec.stdout
            crd = run(version, "explain", "crontab.spec")
            assert crd.returncode == 0, crd.stderr
            assert "GROUP:      stable.example.com" in crd.stdout
            assert "What to run and when." in crd.stdout
            assert "The schedule in cron format." in crd.stdout
            v2 = run(version, "explain", "--output", "plaintext-openapiv2", "ct.spec.cronSpec")
            assert v2.returncode == 0, v2.stderr
            assert "FIELD:    cronSpec <string>" in v2.stdout
            v2_pod = run(
                version, "explain", "--output", "plaintext-openapiv2", "pods.spec.nodeName"
            )
            assert v2_pod.returncode == 0 and "NodeName" in v2_pod.stdout, v2_pod.stderr
            typo = run(version, "apply", "-f", "-", stdin=CRONTAB)
            assert typo.returncode != 0
            assert 'strict decoding error: unknown field "spec.imagee"' in typo.stderr
