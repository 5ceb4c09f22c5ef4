"""DaemonSets and StatefulSets in the sandbox: defaults, validation, strategic merge, Tables."""

from __future__ import annotations

from typing import Any

from fleet.sandbox import RunningSandbox
from tests.sandbox._http import client, make_namespace

APPS = "/apis/apps/v1/namespaces/w"
TABLE = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}


def workload(kind: str, name: str, **tmpl_spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "x:1"}],
                                       **tmpl_spec}}},
    }  # fmt: skip


async def test_defaults_validation_patch_and_tables(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        await make_namespace(c, "w")
        r = await c.post(f"{APPS}/daemonsets", json=workload("DaemonSet", "agent"))
        assert r.status_code == 201, r.text
        spec = r.json()["spec"]
        assert spec["updateStrategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
        }
        assert spec["revisionHistoryLimit"] == 10
        r = await c.post(f"{APPS}/statefulsets", json=workload("StatefulSet", "db"))
        spec = r.json()["spec"]
        assert spec["podManagementPolicy"] == "OrderedReady" and spec["replicas"] == 1
        assert spec["updateStrategy"] == {
            "type": "RollingUpdate",
            "rollingUpdate": {"partition": 0},
        }
        assert spec["persistentVolumeClaimRetentionPolicy"] == {
            "whenDeleted": "Retain",
            "whenScaled": "Retain",
        }
        r = await c.post(
            f"{APPS}/daemonsets", json=workload("DaemonSet", "bad", restartPolicy="Never")
        )
        assert r.status_code == 422
        assert r.json()["message"] == (
            'DaemonSet.apps "bad" is invalid: spec.template.spec.restartPolicy: '
            'Unsupported value: "Never": supported values: "Always"'
        )
        # kubectl set image: a strategic merge patch keyed by container name.
        r = await c.patch(
            f"{APPS}/daemonsets/agent",
            json={"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:2"}]}}}},
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["spec"]["template"]["spec"]["containers"][0]["image"] == "x:2"
        assert r.json()["metadata"]["generation"] == 2

        await c.patch(
            f"{APPS}/daemonsets/agent/status",
            json={"status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3,
                             "numberReady": 2, "updatedNumberScheduled": 3,
                             "numberAvailable": 2}},
            headers={"Content-Type": "application/merge-patch+json"},
        )  # fmt: skip
        table = (await c.get(f"{APPS}/daemonsets", headers=TABLE)).json()
        assert [col["name"] for col in table["columnDefinitions"]] == [
            "Name", "Desired", "Current", "Ready", "Up-to-date", "Available", "Node Selector",
            "Age", "Containers", "Images", "Selector",
        ]  # fmt: skip
        assert table["rows"][0]["cells"][:7] == ["agent", 3, 3, 2, 3, 2, "<none>"]
        assert table["rows"][0]["cells"][-1] == "app=agent"
        table = (await c.get(f"{APPS}/statefulsets", headers=TABLE)).json()
        assert [col["name"] for col in table["columnDefinitions"]] == [
            "Name", "Ready", "Age", "Containers", "Images",
        ]  # fmt: skip
        assert table["rows"][0]["cells"][:2] == ["db", "0/1"]
