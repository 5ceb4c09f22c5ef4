"""deploy/: the manifests parse, grant exactly the documented RBAC, run real commands, carry no secret.

The RBAC table in docs/deploy.md is the reference (each verb with the code path
that uses it); this test fails if deploy/rbac.yaml and that table differ. The
container commands are checked against the real ``kubemock-fleet`` CLI
(``--help`` of each subcommand, through typer's CliRunner). The last test
applies ``deploy/`` with a real kubectl to the sandbox apiserver.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from fleet._settings import FleetSettings, load_settings
from fleet.cli import app
from fleet.sandbox import RunningSandbox
from shards import kubelet_api_settings, shard_metrics_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOC = ROOT / "docs" / "deploy.md"
KUBECTL = "/usr/bin/kubectl"
FLEET_NAMESPACE = "kube-mock-system"

runner = CliRunner()


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def all_documents() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in documents(path)]


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in all_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def workloads() -> list[dict[str, Any]]:
    return [d for d in all_documents() if d["kind"] in ("Deployment", "StatefulSet")]


# -- shape -------------------------------------------------------------------------------


def test_every_manifest_parses_and_names_itself() -> None:
    files = manifest_files()
    assert {p.relative_to(DEPLOY).as_posix() for p in files} == {
        "namespace.yaml",
        "crds/mock.zhizuqiu.cn.yaml",
        "rbac.yaml",
        "coordinator.yaml",
        "shards.yaml",
    }
    for path in files:
        docs = documents(path)
        assert docs, path
        for doc in docs:
            assert doc["apiVersion"] and doc["kind"], path
            assert doc["metadata"]["name"], path


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    assert listed == {p.relative_to(DEPLOY).as_posix() for p in manifest_files()}
    # A namespace transformer would move the kube-node-lease Role: none.
    assert "namespace" not in kustomization


def test_namespaced_objects_live_in_the_fleet_namespace() -> None:
    namespaced = [
        d
        for d in all_documents()
        if d["kind"]
        not in ("Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding")
    ]
    for doc in namespaced:
        expected = {
            "kubemock-fleet-node-leases": "kube-node-lease",
            "kubemock-fleet-client-ca": "kube-system",
        }.get(doc["metadata"]["name"], FLEET_NAMESPACE)
        assert doc["metadata"].get("namespace") == expected, doc["metadata"]["name"]
    assert one("Namespace", FLEET_NAMESPACE)


# -- RBAC ----------------------------------------------------------------------------------

Grant = tuple[str, str, str, str]


def documented_grants() -> set[Grant]:
    text = DOC.read_text(encoding="utf-8")
    table = text.split("| group | resource | verb | scope | used by |", 1)[1]
    grants: set[Grant] = set()
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        group, resource, verb, scope, used_by = (
            cell.strip() for cell in line.strip("|").split("|")
        )
        assert used_by, f"docs/deploy.md: {resource} {verb} names no code path"
        grant = (group, resource, verb, scope)
        assert grant not in grants, f"docs/deploy.md: {grant} listed twice"
        grants.add(grant)
    return grants


def granted() -> set[Grant]:
    grants: set[Grant] = set()
    for doc in documents(DEPLOY / "rbac.yaml"):
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        scope = "cluster" if doc["kind"] == "ClusterRole" else doc["metadata"]["namespace"]
        for rule in doc["rules"]:
            # No nonResourceURLs; resourceNames narrow a rule, and the table names them:
            # resource `configmaps [extension-apiserver-authentication]`.
            assert set(rule) - {"resourceNames"} == {"apiGroups", "resources", "verbs"}, rule
            names = rule.get("resourceNames")
            for group in rule["apiGroups"]:
                for plain in rule["resources"]:
                    resource = f"{plain} [{', '.join(names)}]" if names else plain
                    for verb in rule["verbs"]:
                        assert "*" not in (group, resource, verb), rule
                        grant = (group, resource, verb, scope)
                        assert grant not in grants, f"{grant} granted twice"
                        grants.add(grant)
    return grants


def test_rbac_grants_exactly_the_documented_verbs() -> None:
    documented, actual = documented_grants(), granted()
    assert actual - documented == set(), "granted but not documented (or not used)"
    assert documented - actual == set(), "documented but not granted"


def test_rbac_is_bound_to_the_fleet_service_account() -> None:
    account = one("ServiceAccount", "kubemock-fleet")
    assert account["metadata"]["namespace"] == FLEET_NAMESPACE
    roles = {
        (d["kind"], d["metadata"]["name"], d["metadata"].get("namespace"))
        for d in all_documents()
        if d["kind"] in ("ClusterRole", "Role")
    }
    bound = set()
    for doc in all_documents():
        if doc["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        assert doc["subjects"] == [
            {"kind": "ServiceAccount", "name": "kubemock-fleet", "namespace": FLEET_NAMESPACE}
        ]
        ref = doc["roleRef"]
        namespace = doc["metadata"].get("namespace") if ref["kind"] == "Role" else None
        assert (ref["kind"], ref["name"], namespace) in roles, ref
        bound.add((ref["kind"], ref["name"], namespace))
    assert bound == roles
    for workload in workloads():
        assert workload["spec"]["template"]["spec"]["serviceAccountName"] == "kubemock-fleet"


# -- workloads -------------------------------------------------------------------------------


def console_script() -> str:
    scripts: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "scripts"
    ]
    (name,) = [n for n, target in scripts.items() if target == "fleet.cli:main"]
    return name


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


@pytest.mark.parametrize(
    ("kind", "name"),
    [("Deployment", "kubemock-fleet-coordinator"), ("StatefulSet", "kubemock-fleet-shard")],
)
def test_commands_are_real_cli_commands(kind: str, name: str) -> None:
    c = container(one(kind, name))
    assert c["command"] == [console_script()]
    args: list[str] = c["args"]
    env = {e["name"] for e in c.get("env", [])}
    for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(args)):
        assert ref in env, f"$({ref}) in args is not an env var of the container"
    concrete = [re.sub(r"\$\([A-Za-z_][A-Za-z0-9_]*\)", "0", a) for a in args]
    subcommand = [a for a in concrete if not a.startswith("-")][:1]
    result = runner.invoke(app, [*subcommand, "--help"], terminal_width=200)
    assert result.exit_code == 0, f"kubemock-fleet {' '.join(subcommand)} --help: {result.output}"
    for flag in (a.split("=", 1)[0] for a in concrete if a.startswith("-")):
        assert flag in result.stdout, f"kubemock-fleet {subcommand[0]} takes no {flag}"
    # The whole command line parses (an unknown option or a bad value would fail before --help).
    full = runner.invoke(app, [*concrete, "--help"], terminal_width=200)
    assert full.exit_code == 0, full.output


def test_coordinator_deployment() -> None:
    deployment = one("Deployment", "kubemock-fleet-coordinator")
    assert deployment["spec"]["replicas"] == 2
    assert container(deployment)["args"] == ["coordinator", "--metrics-address", "0.0.0.0"]


def test_shards_serve_the_kubelet_api_on_the_pod_ip() -> None:
    statefulset = one("StatefulSet", "kubemock-fleet-shard")
    c = container(statefulset)
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    on = load_settings(environ={e["name"]: e["value"] for e in c["env"] if "value" in e})
    assert on.shard.kubelet_api is True
    # Each pod advertises its own IP, so every shard takes the port itself (no + K).
    got = kubelet_api_settings(on.shard, offset=2, environ={"POD_IP": "10.0.0.9"})
    assert got is not None and (got.advertise_address, got.port) == ("10.0.0.9", 10250)
    # Open on the pod's every interface (the default binds only what is advertised):
    # kubectl port-forward to the kubelet port dials the pod's loopback.
    assert got.host == "0.0.0.0"
    assert {"name": "kubelet", "containerPort": got.port, "protocol": "TCP"} in c["ports"]
    service = one("Service", statefulset["spec"]["serviceName"])
    assert {"name": "kubelet", "port": 10250, "targetPort": "kubelet", "protocol": "TCP"} in (
        service["spec"]["ports"]
    )


def test_every_shard_pod_serves_metrics_on_the_port_its_probes_name() -> None:
    """Shard K bound metricsPort + K, so shards 1 and up failed the probes on 9100: in a
    pod of its own ($POD_IP set) a shard takes the port itself; under run (one host) + K."""
    c = container(one("StatefulSet", "kubemock-fleet-shard"))
    port = next(p["containerPort"] for p in c["ports"] if p["name"] == "metrics")
    base = FleetSettings().shard.metrics_port
    assert [shard_metrics_port(base, k, {"POD_IP": "10.0.0.9"}) for k in range(3)] == [port] * 3
    assert [shard_metrics_port(base, k, {}) for k in range(3)] == [base, base + 1, base + 2]
    assert shard_metrics_port(0, 2, {}) == 0


def test_shard_id_is_the_pod_ordinal() -> None:
    statefulset = one("StatefulSet", "kubemock-fleet-shard")
    c = container(statefulset)
    assert c["args"] == ["shard", "--id", "$(SHARD_ID)", "--metrics-address", "0.0.0.0"]
    (shard_id,) = [e for e in c["env"] if e["name"] == "SHARD_ID"]
    assert shard_id["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
    }
    service = one("Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]


def test_shard_id_falls_back_to_the_pod_names_ordinal() -> None:
    # Before 1.28 the pod-index label's fieldRef gives "", expanded into --id "": the
    # shard takes the ordinal ending POD_NAME (tests/cli/test_shard_id.py).
    c = container(one("StatefulSet", "kubemock-fleet-shard"))
    (pod_name,) = [e for e in c["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    result = runner.invoke(app, ["shard", "--id", ""], env={"POD_NAME": "", "HOSTNAME": "box"})
    assert result.exit_code == 2 and "ordinal" in result.output


def test_the_fleet_stays_off_its_own_fake_nodes() -> None:
    # Each workload's required node affinity, against a fake Node's labels as a shard
    # registers them: tests/shards/test_placement.py.
    for kind, name in (
        ("Deployment", "kubemock-fleet-coordinator"),
        ("StatefulSet", "kubemock-fleet-shard"),
    ):
        pod = one(kind, name)["spec"]["template"]["spec"]
        assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]


@pytest.mark.parametrize(
    ("kind", "name", "port"),
    [
        ("Deployment", "kubemock-fleet-coordinator", FleetSettings().coordinator.metrics_port),
        ("StatefulSet", "kubemock-fleet-shard", FleetSettings().shard.metrics_port),
    ],
)
def test_probes_ports_resources_and_security(kind: str, name: str, port: int) -> None:
    workload = one(kind, name)
    pod = workload["spec"]["template"]
    assert workload["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    c = container(workload)
    # The endpoints bind loopback unless told otherwise; probes and Prometheus come by pod IP.
    assert FleetSettings().metrics_address == "127.0.0.1"
    assert c["args"][-2:] == ["--metrics-address", "0.0.0.0"]
    assert c["ports"][0] == {"name": "metrics", "containerPort": port, "protocol": "TCP"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    resources = c["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["memory"]
    pod_security = pod["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    security = c["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["privileged"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}


# -- image and credentials ---------------------------------------------------------------------


def test_dockerfile() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    froms = [line.split()[1] for line in instructions if line.startswith("FROM ")]
    assert froms and all(re.fullmatch(r"python:3\.\d+-slim", image) for image in froms)
    assert any("pip install" in line and line.rstrip().endswith(".") for line in instructions)
    (user,) = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert user.split(":")[0] not in ("0", "root")
    assert instructions.index(next(i for i in instructions if i.startswith("USER "))) > max(
        n for n, i in enumerate(instructions) if i.startswith("FROM ")
    ), "USER must apply to the final stage"
    assert not any(
        re.search(r"kubeconfig|\.kube|token|secret", line, re.I) for line in instructions
    )
    ignore = [
        line
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert ignore[0] == "*", "the build context starts from nothing"
    assert "**/*kubeconfig*" in ignore


CREDENTIAL = re.compile(
    r"BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)|client-(key|certificate)-data|certificate-authority-data"
    r"|^\s*(token|password|client-key|username)\s*:|kind:\s*(Secret|Config)\b",
    re.I | re.M,
)


def test_nothing_in_deploy_carries_a_credential() -> None:
    files = [p for p in DEPLOY.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert "kubeconfig" not in path.name.lower(), path
        match = CREDENTIAL.search(path.read_text(encoding="utf-8"))
        assert match is None, f"{path}: {match.group(0) if match else ''}"


# -- the sandbox accepts it ----------------------------------------------------------------------


@pytest.mark.kubectl
def test_kubectl_apply_k_is_accepted(shared_sandbox: RunningSandbox, tmp_path: Path) -> None:
    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [
            KUBECTL,
            "--kubeconfig",
            str(shared_sandbox.kubeconfig),
            "--cache-dir",
            str(tmp_path / "cache"),
            *args,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    applied = kubectl("apply", "-k", str(DEPLOY))
    assert applied.returncode == 0, applied.stderr
    created = {line.split()[0] for line in applied.stdout.splitlines()}
    expected = {
        f"{kind.lower()}.{group}/{name}" if group else f"{kind.lower()}/{name}"
        for kind, group, name in (
            (d["kind"], d["apiVersion"].rpartition("/")[0], d["metadata"]["name"])
            for d in all_documents()
        )
    }
    assert created == expected
    again = kubectl("apply", "-k", str(DEPLOY))
    assert again.returncode == 0, again.stderr
    assert all(line.endswith(" unchanged") for line in again.stdout.splitlines()), again.stdout
