"""Services in the sandbox: allocated cluster IPs and node ports, defaults, immutability, discovery."""

from __future__ import annotations

import ipaddress
from typing import Any

from fleet.sandbox import RunningSandbox, SandboxApp, SandboxSettings
from fleet.sandbox._api import Call
from tests.sandbox._http import client, make_namespace

SVCS = "/api/v1/namespaces/s/services"
MERGE = {"Content-Type": "application/merge-patch+json"}


def service(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}], **spec},
    }  # fmt: skip


async def test_cluster_ips_node_ports_and_defaults(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        kubernetes = (await c.get("/api/v1/namespaces/default/services/kubernetes")).json()
        assert kubernetes["spec"]["clusterIP"] == "10.96.0.1"
        assert kubernetes["spec"]["ports"][0]["port"] == 443
        await make_namespace(c, "s")
        r = await c.post(SVCS, json=service("web"))
        assert r.status_code == 201, r.text
        spec = r.json()["spec"]
        ip = spec["clusterIP"]
        assert ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("10.96.0.0/16")
        assert ip != "10.96.0.1" and spec["clusterIPs"] == [ip]
        assert (spec["ipFamilies"], spec["ipFamilyPolicy"]) == (["IPv4"], "SingleStack")
        assert spec["internalTrafficPolicy"] == "Cluster" and spec["type"] == "ClusterIP"
        assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
        assert spec["sessionAffinity"] == "None"

        r = await c.post(SVCS, json=service("copy", clusterIP=ip))
        assert r.status_code == 422
        assert r.json()["message"] == (
            f'Service "copy" is invalid: spec.clusterIPs: Invalid value: []string{{"{ip}"}}: '
            f"failed to allocate IP {ip}: provided IP is already allocated"
        )
        r = await c.post(SVCS, json=service("far", clusterIP="192.168.0.1"))
        assert r.status_code == 422
        assert "The range of valid IPs is 10.96.0.0/16" in r.json()["message"]

        # An update without the allocated fields keeps them; changing the IP is refused.
        current = (await c.get(f"{SVCS}/web")).json()
        current["spec"].pop("clusterIP")
        current["spec"].pop("clusterIPs")
        r = await c.put(f"{SVCS}/web", json=current)
        assert r.status_code == 200 and r.json()["spec"]["clusterIP"] == ip
        r = await c.patch(f"{SVCS}/web", json={"spec": {"clusterIP": "10.96.5.5"}}, headers=MERGE)
        assert r.status_code == 422
        assert "spec.clusterIPs[0]" in r.json()["message"]
        assert "may not change once set" in r.json()["message"]

        r = await c.post(SVCS, json=service("np", type="NodePort"))
        port = r.json()["spec"]["ports"][0]
        assert 30000 <= port["nodePort"] <= 32767
        assert r.json()["spec"]["externalTrafficPolicy"] == "Cluster"
        r = await c.post(SVCS, json=service("lb", type="LoadBalancer"))
        assert r.json()["spec"]["allocateLoadBalancerNodePorts"] is True
        r = await c.post(SVCS, json=service("headless", clusterIP="None"))
        assert r.json()["spec"]["clusterIPs"] == ["None"]
        r = await c.post(SVCS, json=service("ext", type="ExternalName", externalName="a.example"))
        assert "clusterIP" not in r.json()["spec"]

        # Freed with the Service: the address can be asked for again.
        assert (await c.delete(f"{SVCS}/web")).status_code == 200
        r = await c.post(SVCS, json=service("again", clusterIP=ip))
        assert r.status_code == 201, r.text

        resources = (await c.get("/apis/discovery.k8s.io/v1")).json()["resources"]
        assert [r["name"] for r in resources] == ["endpointslices"]


async def test_labels_and_annotations_are_validated(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        await make_namespace(c, "s")
        cm = "/api/v1/namespaces/s/configmaps"
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": "c", "labels": {"-bad": "ok"}}}  # fmt: skip
        r = await c.post(cm, json=body)
        assert r.status_code == 422
        assert r.json()["message"] == (
            'ConfigMap "c" is invalid: metadata.labels: Invalid value: "-bad": name part must '
            "consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
        body["metadata"]["labels"] = {"app": "v" * 64}
        r = await c.post(cm, json=body)
        assert r.status_code == 422
        assert r.json()["details"]["causes"][0]["message"].startswith(
            f'Invalid value: "{"v" * 64}": must be no more than 63 characters'
        )
        body["metadata"]["labels"] = {}
        body["metadata"]["annotations"] = {"big": "x" * (256 * 1024)}
        r = await c.post(cm, json=body)
        assert r.status_code == 422
        assert r.json()["message"] == (
            'ConfigMap "c" is invalid: metadata.annotations: Too long: may not be more than '
            "262144 bytes"
        )
        assert r.json()["details"]["causes"][0]["reason"] == "FieldValueTooLong"
        body["metadata"]["annotations"] = {"Example.COM/Key": "fine"}  # case does not matter
        assert (await c.post(cm, json=body)).status_code == 201


def test_events_expire_after_the_event_ttl() -> None:
    clock = [1_714_564_800.0]  # 2024-05-01T12:00:00Z
    app = SandboxApp(SandboxSettings(event_ttl=3600, wall_clock=lambda: clock[0]))
    rt = app.registry.get("", "v1", "events")
    assert rt is not None
    for name, last in (("old", "2024-05-01T12:00:00Z"), ("recent", "2024-05-01T12:50:00Z")):
        app.api.create(
            Call(rt=rt, namespace="default"),
            {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
             "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
             "reason": "Scheduled", "lastTimestamp": last, "firstTimestamp": last},
        )  # fmt: skip
    assert app.expire_events(clock[0] + 3000) == 0
    assert app.expire_events(clock[0] + 3601) == 1
    assert app.store.get(rt.key, "default", "old") is None
    assert app.store.get(rt.key, "default", "recent") is not None
    assert SandboxApp(SandboxSettings(event_ttl=0)).expire_events(clock[0] * 2) == 0


async def test_evictions_honour_disruption_budgets(sandbox: RunningSandbox) -> None:
    pdbs = "/apis/policy/v1/namespaces/s/poddisruptionbudgets"
    async with client(sandbox) as c:
        await make_namespace(c, "s")
        for name in ("a", "b"):
            body = {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "labels": {"app": "web"}},
                    "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}}  # fmt: skip
            await c.post("/api/v1/namespaces/s/pods", json=body)
            await c.patch(
                f"/api/v1/namespaces/s/pods/{name}/status",
                json={"status": {"phase": "Running"}},
                headers=MERGE,
            )
        await c.post(pdbs, json={"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                 "metadata": {"name": "web"},
                                 "spec": {"minAvailable": 1,
                                          "selector": {"matchLabels": {"app": "web"}}}})  # fmt: skip
        eviction: dict[str, Any] = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": "a"},
        }
        r = await c.post("/api/v1/namespaces/s/pods/a/eviction", json=eviction)
        assert r.status_code == 429  # not yet observed by the disruption controller
        assert r.json()["details"]["causes"][0]["message"] == (
            "The disruption budget web is still being processed by the server."
        )
        status = {"observedGeneration": 1, "disruptionsAllowed": 1, "currentHealthy": 2,
                  "desiredHealthy": 1, "expectedPods": 2}  # fmt: skip
        await c.patch(f"{pdbs}/web/status", json={"status": status}, headers=MERGE)
        r = await c.post("/api/v1/namespaces/s/pods/a/eviction", json=eviction)
        assert r.status_code == 201, r.text
        pdb = (await c.get(f"{pdbs}/web")).json()
        assert pdb["status"]["disruptionsAllowed"] == 0
        assert list(pdb["status"]["disruptedPods"]) == ["a"]
        eviction["metadata"]["name"] = "b"
        r = await c.post("/api/v1/namespaces/s/pods/b/eviction", json=eviction)
        assert r.status_code == 429
        assert r.json()["message"] == (
            "Cannot evict pod as it would violate the pod's disruption budget."
        )
        assert r.json()["details"]["causes"][0]["message"] == (
            "The disruption budget web needs 1 healthy pods and has 2 currently"
        )


async def test_the_kubernetes_service_names_this_server(sandbox: RunningSandbox) -> None:
    host, _, port = sandbox.url.split("://", 1)[1].rpartition(":")
    async with client(sandbox) as c:
        ep = (await c.get("/api/v1/namespaces/default/endpoints/kubernetes")).json()
        assert ep["subsets"] == [
            {"addresses": [{"ip": host}],
             "ports": [{"name": "https", "port": int(port), "protocol": "TCP"}]}
        ]  # fmt: skip
        es = (
            await c.get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes")
        ).json()
        assert es["endpoints"][0]["addresses"] == [host]
        assert es["metadata"]["labels"] == {"kubernetes.io/service-name": "kubernetes"}
        svc = (await c.get("/api/v1/namespaces/default/services/kubernetes")).json()
        assert svc["spec"]["ports"][0]["targetPort"] == int(port)
