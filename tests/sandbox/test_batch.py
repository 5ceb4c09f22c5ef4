"""batch/v1 Jobs and CronJobs in the sandbox: discovery, defaults, validation, status, Tables, kubectl."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.sandbox import RunningSandbox
from tests.sandbox._http import client, make_namespace, pod
from tests.sandbox.test_kubectl import KUBECTL, KUBECTL_127, KUBECTL_133, Kubectl, kubectl  # noqa: F401

JOBS = "/apis/batch/v1/namespaces/b/jobs"
CRONJOBS = "/apis/batch/v1/namespaces/b/cronjobs"


def job(name: str, restart: str = "Never", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": restart,
                                       "containers": [{"name": "c", "image": "busybox:1.36"}]}},
                 **spec},
    }  # fmt: skip


def cronjob(name: str, schedule: str = "*/5 * * * *", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
        "spec": {"schedule": schedule, **spec,
                 "jobTemplate": {"spec": {"template": {"spec": {
                     "restartPolicy": "OnFailure",
                     "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}},
    }  # fmt: skip


async def test_discovery_lists_batch(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        groups = {g["name"]: g for g in (await c.get("/apis")).json()["groups"]}
        assert groups["batch"]["preferredVersion"] == {"groupVersion": "batch/v1", "version": "v1"}
        resources = (await c.get("/apis/batch/v1")).json()["resources"]
        names = {r["name"]: r for r in resources}
        assert set(names) == {"jobs", "jobs/status", "cronjobs", "cronjobs/status"}
        assert names["cronjobs"]["shortNames"] == ["cj"]
        assert names["jobs"]["categories"] == ["all"]
        assert names["jobs"]["singularName"] == "job"


async def test_job_defaults_status_and_immutability(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        await make_namespace(c, "b")
        r = await c.post(JOBS, json=job("pi"))
        assert r.status_code == 201, r.text
        created = r.json()
        uid = created["metadata"]["uid"]
        spec = created["spec"]
        assert created["metadata"]["generation"] == 1
        assert created["status"] == {}
        assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        assert spec["template"]["metadata"]["labels"] == {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": "pi",
            "controller-uid": uid,
            "job-name": "pi",
        }
        assert {k: spec[k] for k in ("completions", "parallelism", "backoffLimit")} == {
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": 6,
        }
        assert spec["completionMode"] == "NonIndexed" and spec["suspend"] is False
        assert spec["podReplacementPolicy"] == "TerminatingOrFailed"

        # A work queue: parallelism alone leaves completions unset.
        r = await c.post(JOBS, json=job("queue", parallelism=3))
        assert "completions" not in r.json()["spec"] and r.json()["spec"]["parallelism"] == 3

        r = await c.patch(
            f"{JOBS}/pi/status",
            json={"status": {"active": 1, "startTime": "2024-05-01T12:00:00Z"}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert r.status_code == 200 and r.json()["status"]["active"] == 1

        r = await c.patch(
            f"{JOBS}/pi",
            json={"spec": {"template": {"spec": {"activeDeadlineSeconds": 5}}}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert r.status_code == 422
        assert r.json()["details"]["causes"][0]["field"] == "spec.template"
        assert "field is immutable" in r.json()["message"]

        r = await c.post(JOBS, json=job("always", restart="Always"))
        assert r.status_code == 422
        assert r.json()["message"] == (
            'Job.batch "always" is invalid: spec.template.spec.restartPolicy: Unsupported value: '
            '"Always": supported values: "OnFailure", "Never"'
        )


async def test_job_delete_orphans_pods_unless_told(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        await make_namespace(c, "b")
        for name in ("keep", "drop"):
            owner = (await c.post(JOBS, json=job(name))).json()["metadata"]
            body = pod(f"{name}-pod")
            body["metadata"]["ownerReferences"] = [
                {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": owner["uid"],
                 "controller": True, "blockOwnerDeletion": True}
            ]  # fmt: skip
            assert (await c.post("/api/v1/namespaces/b/pods", json=body)).status_code == 201
        assert (await c.delete(f"{JOBS}/keep")).status_code == 200
        kept = (await c.get("/api/v1/namespaces/b/pods/keep-pod")).json()
        assert "ownerReferences" not in kept["metadata"]
        r = await c.request("DELETE", f"{JOBS}/drop", json={"propagationPolicy": "Background"})
        assert r.status_code == 200
        gone = await c.get("/api/v1/namespaces/b/pods/drop-pod")
        assert gone.status_code == 404 or gone.json()["metadata"].get("deletionTimestamp")


async def test_cronjob_defaults_and_schedule_validation(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        await make_namespace(c, "b")
        r = await c.post(CRONJOBS, json=cronjob("tick"))
        assert r.status_code == 201, r.text
        spec = r.json()["spec"]
        assert {k: spec[k] for k in ("concurrencyPolicy", "suspend")} == {
            "concurrencyPolicy": "Allow",
            "suspend": False,
        }
        assert (spec["successfulJobsHistoryLimit"], spec["failedJobsHistoryLimit"]) == (3, 1)
        assert "backoffLimit" not in spec["jobTemplate"]["spec"]  # a template, not a Job

        r = await c.post(CRONJOBS, json=cronjob("bad", "61 * * * *"))
        assert r.status_code == 422
        assert r.json()["message"] == (
            'CronJob.batch "bad" is invalid: spec.schedule: Invalid value: "61 * * * *": '
            "end of range (61) above maximum (59): 61"
        )
        r = await c.post(CRONJOBS, json=cronjob("tz", "0 * * * *", timeZone="Mars/Base"))
        assert r.status_code == 422
        assert r.json()["details"]["causes"][0]["field"] == "spec.timeZone"
        r = await c.post(CRONJOBS, json=cronjob("x" * 53))
        assert r.status_code == 422
        assert "must be no more than 52 characters" in r.json()["message"]


async def test_job_and_cronjob_tables(sandbox: RunningSandbox) -> None:
    accept = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    async with client(sandbox) as c:
        await make_namespace(c, "b")
        await c.post(JOBS, json=job("pi", completions=3, parallelism=2))
        await c.patch(
            f"{JOBS}/pi/status",
            json={"status": {"succeeded": 3, "startTime": "2024-05-01T12:00:00Z",
                             "completionTime": "2024-05-01T12:01:05Z",
                             "conditions": [{"type": "Complete", "status": "True"}]}},
            headers={"Content-Type": "application/merge-patch+json"},
        )  # fmt: skip
        table = (await c.get(JOBS, headers=accept)).json()
        assert [col["name"] for col in table["columnDefinitions"]] == [
            "Name", "Status", "Completions", "Duration", "Age", "Containers", "Images", "Selector"
        ]  # fmt: skip
        assert table["rows"][0]["cells"][:4] == ["pi", "Complete", "3/3", "65s"]
        await c.post(CRONJOBS, json=cronjob("tick"))
        table = (await c.get(CRONJOBS, headers=accept)).json()
        assert [col["name"] for col in table["columnDefinitions"]][:7] == [
            "Name", "Schedule", "Timezone", "Suspend", "Active", "Last Schedule", "Age"
        ]  # fmt: skip
        cells = table["rows"][0]["cells"]
        assert cells[:6] == ["tick", "*/5 * * * *", "<none>", "False", 0, "<none>"]
        assert cells[-1] == "<none>"


JOB_YAML = """apiVersion: batch/v1
kind: Job
metadata: {name: pi}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: pi, image: "perl:5.34"}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: hello}
spec:
  schedule: "*/1 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: hello, image: "busybox:1.36"}]
"""


@pytest.mark.kubectl
def test_kubectl_get_jobs_and_cronjobs(kubectl: Kubectl) -> None:  # noqa: F811
    kubectl("apply", "-f", "-", stdin=JOB_YAML)
    out = kubectl("get", "jobs,cronjobs").stdout.splitlines()
    assert out[0].split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert out[1].split()[:3] == ["job.batch/pi", "Running", "0/1"]
    header = [i for i, line in enumerate(out) if line.startswith("NAME")][1]
    assert out[header].split() == [
        "NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"
    ]  # fmt: skip
    assert out[header + 1].split()[:6] == [
        "cronjob.batch/hello", "*/1", "*", "*", "*", "*"
    ]  # fmt: skip
    kubectl("create", "job", "from-cli", "--image=busybox:1.36", binary=KUBECTL_127)
    got = kubectl("get", "job", "from-cli", "-o", "jsonpath={.spec.template.spec.restartPolicy}")
    assert got.stdout == "Never"
    kubectl("create", "job", "manual", "--from=cronjob/hello", binary=KUBECTL_127)
    owner = kubectl(
        "get", "job", "manual", "-o", "jsonpath={.metadata.ownerReferences[0].kind}"
    ).stdout
    assert owner == "CronJob"


@pytest.mark.kubectl
def test_kubectl_133_creates_jobs_and_cronjobs_in_protobuf(kubectl: Kubectl) -> None:  # noqa: F811
    kubectl("create", "job", "pb", "--image=busybox:1.36", "--", "echo", "hi", binary=KUBECTL_133)
    job = kubectl("get", "job", "pb", "-o", "json").stdout
    assert '"restartPolicy": "Never"' in job and '"echo"' in job
    assert '"batch.kubernetes.io/job-name": "pb"' in job
    kubectl(
        "create", "cronjob", "tick", "--image=busybox:1.36", "--schedule=*/5 * * * *",
        binary=KUBECTL_133,
    )  # fmt: skip
    got = kubectl(
        "get",
        "cronjob",
        "tick",
        "-o",
        "jsonpath={.spec.schedule} {.spec.jobTemplate.spec.template.spec.restartPolicy}",
    )
    assert got.stdout == "*/5 * * * * OnFailure"
    kubectl("create", "job", "manual", "--from=cronjob/tick", binary=KUBECTL_133)
    owner = kubectl("get", "job", "manual", "-o", "jsonpath={.metadata.ownerReferences[0].name}")
    assert owner.stdout == "tick"
