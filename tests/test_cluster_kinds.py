"""node.k8s.io, certificates.k8s.io, admissionregistration.k8s.io, flowcontrol and autoscaling/v1
on the sandbox and kube-apiserver alike: discovery, defaults, PrepareForCreate, validation,
the CSR approval subresource, and one HPA seen at autoscaling/v1 and v2.

Each check runs on both apiservers and asserts the same expected values, so a difference between
them fails one parameter. Where the sandbox follows a newer apiserver than the v1.24 one here
(flowcontrol v1beta3, ``lendablePercent``), the check says so and leaves that part out.
"""

from __future__ import annotations

import json
from typing import Any

from fleet.kube import Client, load_config
from tests._apiserver import Apiserver, unique

DISCOVERY = {
    "node.k8s.io/v1": [("runtimeclasses", False, "RuntimeClass", [], [])],
    "certificates.k8s.io/v1": [
        ("certificatesigningrequests", False, "CertificateSigningRequest", ["csr"], []),
        ("certificatesigningrequests/approval", False, "CertificateSigningRequest", [], []),
        ("certificatesigningrequests/status", False, "CertificateSigningRequest", [], []),
    ],
    "admissionregistration.k8s.io/v1": [
        ("mutatingwebhookconfigurations", False, "MutatingWebhookConfiguration", [], ["api-extensions"]),
        ("validatingwebhookconfigurations", False, "ValidatingWebhookConfiguration", [], ["api-extensions"]),
    ],
    "autoscaling/v1": [
        ("horizontalpodautoscalers", True, "HorizontalPodAutoscaler", ["hpa"], ["all"]),
        ("horizontalpodautoscalers/status", True, "HorizontalPodAutoscaler", [], []),
    ],
    "flowcontrol.apiserver.k8s.io/v1beta2": [
        ("flowschemas", False, "FlowSchema", [], []),
        ("flowschemas/status", False, "FlowSchema", [], []),
        ("prioritylevelconfigurations", False, "PriorityLevelConfiguration", [], []),
        ("prioritylevelconfigurations/status", False, "PriorityLevelConfiguration", [], []),
    ],
}  # fmt: skip
BOOTSTRAP_FLOWSCHEMAS = {
    "catch-all", "exempt", "global-default", "kube-controller-manager", "kube-scheduler",
    "kube-system-service-accounts", "probes", "service-accounts", "system-leader-election",
    "system-node-high", "system-nodes", "workload-leader-election",
}  # fmt: skip


async def _call(
    client: Client, method: str, path: str, body: Any = None, content_type: str | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    r = await client.request(
        method, path, body=data, content_type=content_type or ("application/json" if data else None)
    )
    return r.status, json.loads(r.content) if r.content else None


async def test_discovery_matches_kube_apiserver(apiserver: Apiserver) -> None:
    async with Client(load_config(apiserver.kubeconfig)) as client:
        for gv, expected in DISCOVERY.items():
            status, doc = await _call(client, "GET", f"/apis/{gv}")
            assert status == 200, gv
            seen = [
                (
                    r["name"],
                    r["namespaced"],
                    r["kind"],
                    r.get("shortNames", []),
                    r.get("categories", []),
                )
                for r in doc["resources"]
            ]
            assert seen == expected, gv
        _, groups = await _call(client, "GET", "/apis")
        preferred = {g["name"]: g["preferredVersion"]["version"] for g in groups["groups"]}
        assert preferred["autoscaling"] == "v2"
        # v1.24 prefers v1beta2; the sandbox serves v1beta3 too and prefers it, as 1.26-1.28 do.
        assert preferred["flowcontrol.apiserver.k8s.io"] == (
            "v1beta2" if apiserver.is_real else "v1beta3"
        )
        _, schemas = await _call(
            client, "GET", "/apis/flowcontrol.apiserver.k8s.io/v1beta2/flowschemas"
        )
        assert {i["metadata"]["name"] for i in schemas["items"]} >= BOOTSTRAP_FLOWSCHEMAS


async def test_stored_as_kube_apiserver_stores_them(apiserver: Apiserver) -> None:
    name = unique("cluster-kinds")
    async with Client(load_config(apiserver.kubeconfig)) as client:
        # RuntimeClass: handler required (422 names the field), else stored as sent.
        status, err = await _call(
            client, "POST", "/apis/node.k8s.io/v1/runtimeclasses", {"metadata": {"name": name}}
        )
        assert status == 422 and [c["field"] for c in err["details"]["causes"]] == ["handler"]
        status, rc = await _call(
            client,
            "POST",
            "/apis/node.k8s.io/v1/runtimeclasses",
            {"metadata": {"name": name}, "handler": "runsc"},
        )
        assert status == 201 and rc["handler"] == "runsc" and "spec" not in rc

        # Webhook configurations: every default of a v1 webhook.
        hook = {
            "name": "v.example.com",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"name": "s", "namespace": "default"}},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        }  # fmt: skip
        status, vw = await _call(
            client,
            "POST",
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            {"metadata": {"name": name}, "webhooks": [hook]},
        )
        assert status == 201, vw
        stored = vw["webhooks"][0]
        assert {k: stored[k] for k in stored if k not in hook} == {
            "failurePolicy": "Fail",
            "matchPolicy": "Equivalent",
            "namespaceSelector": {},
            "objectSelector": {},
            "timeoutSeconds": 10,
            "reinvocationPolicy": "Never",
        }
        assert stored["clientConfig"]["service"]["port"] == 443
        assert stored["rules"][0]["scope"] == "*"
        await _call(
            client,
            "DELETE",
            f"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{name}",
        )
        await _call(client, "DELETE", f"/apis/node.k8s.io/v1/runtimeclasses/{name}")

        # CSR: the requester filled in, the approval subresource changes the conditions.
        csr_path = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
        status, csr = await _call(
            client,
            "POST",
            csr_path,
            {
                "metadata": {"name": name},
                "spec": {
                    "request": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K",
                    "signerName": "kubernetes.io/kube-apiserver-client",
                    "usages": ["client auth"],
                },
            },
        )
        if status == 422:  # kube-apiserver parses the request: a real CSR is needed there
            assert apiserver.is_real and "spec.request" in json.dumps(csr)
        else:
            assert status == 201, csr
            assert csr["spec"]["username"] and "system:masters" in csr["spec"]["groups"]
            assert csr["status"] == {}
            approved = dict(csr, status={"conditions": [
                {"type": "Approved", "status": "True", "reason": "Test", "message": "ok",
                 "lastUpdateTime": "2026-01-01T00:00:00Z"}
            ]})  # fmt: skip
            status, after = await _call(client, "PUT", f"{csr_path}/{name}/approval", approved)
            assert status == 200, after
            cond = after["status"]["conditions"][0]
            assert cond["type"] == "Approved" and cond["lastTransitionTime"]
            await _call(client, "DELETE", f"{csr_path}/{name}")

        # One HPA, written at autoscaling/v1, read at v2 and back.
        ns = name
        await _call(client, "POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
        v1 = f"/apis/autoscaling/v1/namespaces/{ns}/horizontalpodautoscalers"
        v2 = f"/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers"
        spec = {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "maxReplicas": 5,
            "targetCPUUtilizationPercentage": 60,
        }
        status, hpa = await _call(client, "POST", v1, {"metadata": {"name": "web"}, "spec": spec})
        assert status == 201 and hpa["apiVersion"] == "autoscaling/v1", hpa
        assert hpa["spec"] == dict(spec, minReplicas=1)
        _, as_v2 = await _call(client, "GET", f"{v2}/web")
        assert as_v2["apiVersion"] == "autoscaling/v2"
        assert as_v2["spec"]["metrics"] == [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}
        ]  # fmt: skip
        status, patched = await _call(
            client,
            "PATCH",
            f"{v1}/web",
            {"spec": {"targetCPUUtilizationPercentage": 70}},
            "application/merge-patch+json",
        )
        assert status == 200 and patched["spec"]["targetCPUUtilizationPercentage"] == 70
        _, listed = await _call(client, "GET", v1)
        assert listed["apiVersion"] == "autoscaling/v1"
        assert listed["items"][0]["spec"]["targetCPUUtilizationPercentage"] == 70
        _, as_v2 = await _call(client, "GET", f"{v2}/web")
        assert as_v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
        await _call(client, "DELETE", f"/api/v1/namespaces/{ns}")

        # PriorityLevelConfiguration at v1beta2: queuing required for Queue, then defaulted.
        plc = "/apis/flowcontrol.apiserver.k8s.io/v1beta2/prioritylevelconfigurations"
        body: dict[str, Any] = {
            "metadata": {"name": name},
            "spec": {"type": "Limited", "limited": {"limitResponse": {"type": "Queue"}}},
        }
        status, err = await _call(client, "POST", plc, body)
        assert status == 422
        assert [c["field"] for c in err["details"]["causes"]] == [
            "spec.limited.limitResponse.queuing"
        ]
        body["spec"]["limited"]["limitResponse"]["queuing"] = {"queues": 16}
        status, level = await _call(client, "POST", plc, body)
        assert status == 201, json.dumps(level)
        limited = level["spec"]["limited"]
        limited.pop("lendablePercent", None)  # 1.26+ (the sandbox), not in v1.24
        assert limited == {
            "assuredConcurrencyShares": 30,
            "limitResponse": {"type": "Queue", "queuing": {"queues": 16, "handSize": 8, "queueLengthLimit": 50}},
        }  # fmt: skip
        await _call(client, "DELETE", f"{plc}/{name}")
