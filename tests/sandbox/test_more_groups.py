"""policy, autoscaling, networking.k8s.io, storage.k8s.io, scheduling.k8s.io: stored, defaulted, printed."""

from __future__ import annotations

import pytest

from fleet.sandbox import RunningSandbox
from tests.sandbox._http import client, make_namespace
from tests.sandbox.test_kubectl import Kubectl, kubectl  # noqa: F401

TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}

MANIFESTS = """apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec: {minAvailable: 2, selector: {matchLabels: {app: web}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  maxReplicas: 5
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  ingressClassName: nginx
  rules:
  - host: web.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny}
spec: {podSelector: {matchLabels: {app: web}}}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: fast}
provisioner: example.com/fast
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
"""


async def test_discovery_defaults_and_tables(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        groups = {g["name"] for g in (await c.get("/apis")).json()["groups"]}
        assert {"policy", "autoscaling", "networking.k8s.io", "storage.k8s.io",
                "scheduling.k8s.io", "batch", "discovery.k8s.io"} <= groups  # fmt: skip
        await make_namespace(c, "m")
        r = await c.post(
            "/apis/autoscaling/v2/namespaces/m/horizontalpodautoscalers",
            json={"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                  "metadata": {"name": "web"},
                  "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": "web"}, "maxReplicas": 5}},
        )  # fmt: skip
        assert r.status_code == 201, r.text
        spec = r.json()["spec"]
        assert spec["minReplicas"] == 1
        assert spec["metrics"][0]["resource"]["target"] == {
            "type": "Utilization",
            "averageUtilization": 80,
        }
        table = (
            await c.get("/apis/autoscaling/v2/namespaces/m/horizontalpodautoscalers", headers=TABLE)
        ).json()
        assert table["rows"][0]["cells"][:6] == [
            "web", "Deployment/web", "cpu: <unknown>/80%", "1", 5, 0
        ]  # fmt: skip
        r = await c.post(
            "/apis/networking.k8s.io/v1/namespaces/m/networkpolicies",
            json={"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                  "metadata": {"name": "deny"}, "spec": {"podSelector": {}}},
        )  # fmt: skip
        assert r.json()["spec"]["policyTypes"] == ["Ingress"]
        r = await c.post(
            "/apis/storage.k8s.io/v1/storageclasses",
            json={"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                  "metadata": {"name": "fast"}, "provisioner": "example.com/fast"},
        )  # fmt: skip
        assert (r.json()["reclaimPolicy"], r.json()["volumeBindingMode"]) == (
            "Delete",
            "Immediate",
        )


@pytest.mark.kubectl
def test_kubectl_applies_and_gets_them(kubectl: Kubectl) -> None:  # noqa: F811
    kubectl("apply", "-f", "-", stdin=MANIFESTS)
    out = kubectl("get", "pdb,hpa,ingress,netpol").stdout
    assert "poddisruptionbudget.policy/web   2               N/A" in out
    assert "horizontalpodautoscaler.autoscaling/web   Deployment/web   cpu: <unknown>/80%" in out
    assert "ingress.networking.k8s.io/web   nginx   web.example.com" in out
    assert "networkpolicy.networking.k8s.io/deny   app=web" in out
    lines = kubectl("get", "sc", "fast").stdout.splitlines()
    assert lines[0].split() == [
        "NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION", "AGE"
    ]  # fmt: skip
    assert lines[1].split()[:5] == ["fast", "example.com/fast", "Delete", "Immediate", "false"]
    lines = kubectl("get", "pc", "high").stdout.splitlines()
    assert lines[1].split()[:3] == ["high", "1000", "false"]


@pytest.mark.kubectl
def test_kubectl_133_creates_pdbs_priorityclasses_and_rbac_in_protobuf(
    kubectl: Kubectl,  # noqa: F811
) -> None:
    k133 = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"
    kubectl("create", "pdb", "web", "--selector=app=web", "--min-available=50%", binary=k133)
    got = kubectl("get", "pdb", "web", "-o", "jsonpath={.spec.minAvailable} {.spec.selector}")
    assert got.stdout == '50% {"matchLabels":{"app":"web"}}'
    kubectl("create", "priorityclass", "pb-high", "--value=1000", "--description=d", binary=k133)
    got = kubectl("get", "pc", "pb-high", "-o", "jsonpath={.value} {.description}")
    assert got.stdout == "1000 d"
    kubectl("create", "role", "reader", "--verb=get,list", "--resource=pods", binary=k133)
    got = kubectl("get", "role", "reader", "-o", "jsonpath={.rules[0].verbs} {.rules[0].resources}")
    assert got.stdout == '["get","list"] ["pods"]'
    kubectl(
        "create", "rolebinding", "reads", "--role=reader", "--serviceaccount=default:default",
        binary=k133,
    )  # fmt: skip
    got = kubectl(
        "get", "rolebinding", "reads", "-o",
        "jsonpath={.roleRef.kind}/{.roleRef.name} {.subjects[0].kind}:{.subjects[0].name}",
    )  # fmt: skip
    assert got.stdout == "Role/reader ServiceAccount:default"
