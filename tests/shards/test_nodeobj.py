"""Node and Lease bodies as a real kubelet writes them (shards._nodeobj).

Expected bodies follow apiserver-transcripts/kubelet-requests.md (node
``hollow-1``), times normalised to ``<time>``/``<microtime>``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from shards._nodeobj import (
    KubeletSpec,
    Taint,
    decode_lease,
    encode_lease,
    lease_as_json,
    lease_body,
    node_body,
    node_status,
    node_status_patch,
    renew_lease,
    status_changed,
    trim_lease,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
_MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

HOLLOW = KubeletSpec(
    name="hollow-1",
    internal_ips=("192.0.2.2",),
    capacity={"cpu": "1", "ephemeral-storage": "0", "memory": "3840Mi", "pods": "110"},
    provider_id="kubemark://hollow-1",
    kubelet_version="v1.24.0-alpha.1.0+e5f3f020084e",
    container_runtime_version="fakeRuntime://0.1.0",
    kernel_version="3.16.0-0.bpo.4-amd64",
    os_image="Debian GNU/Linux 7 (wheezy)",
)


def normalised(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if isinstance(value, str) and _TIME.match(value):
        return "<time>"
    if isinstance(value, str) and _MICRO.match(value):
        return "<microtime>"
    return value


def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
    return {
        "type": kind,
        "status": status,
        "lastHeartbeatTime": "<time>",
        "lastTransitionTime": "<time>",
        "reason": reason,
        "message": message,
    }


# kubelet-requests.md "Node registration: POST /api/v1/nodes", with two deliberate
# differences: the `type: kubemock` label, and Ready at once (see _nodeobj's docstring).
NODE_POST = {
    "kind": "Node",
    "apiVersion": "v1",
    "metadata": {
        "name": "hollow-1",
        "labels": {
            "beta.kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "kubernetes.io/hostname": "hollow-1",
            "kubernetes.io/os": "linux",
            "type": "kubemock",
        },
    },
    "spec": {"providerID": "kubemark://hollow-1"},
    "status": {
        "capacity": {"cpu": "1", "ephemeral-storage": "0", "memory": "3840Mi", "pods": "110"},
        "allocatable": {"cpu": "1", "ephemeral-storage": "0", "memory": "3840Mi", "pods": "110"},
        "conditions": [
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            condition(
                "DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": "192.0.2.2"},
            {"type": "Hostname", "address": "hollow-1"},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": "3.16.0-0.bpo.4-amd64",
            "osImage": "Debian GNU/Linux 7 (wheezy)",
            "containerRuntimeVersion": "fakeRuntime://0.1.0",
            "kubeletVersion": "v1.24.0-alpha.1.0+e5f3f020084e",
            "kubeProxyVersion": "v1.24.0-alpha.1.0+e5f3f020084e",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    },
}
SET_ORDER = [
    {"type": "MemoryPressure"},
    {"type": "DiskPressure"},
    {"type": "PIDPressure"},
    {"type": "Ready"},
]
# "Node status PATCH with nothing changed but the heartbeat"
HEARTBEAT_PATCH = {
    "status": {
        "$setElementOrder/conditions": SET_ORDER,
        "conditions": [
            {"lastHeartbeatTime": "<time>", "type": "MemoryPressure"},
            {"lastHeartbeatTime": "<time>", "type": "DiskPressure"},
            {"lastHeartbeatTime": "<time>", "type": "PIDPressure"},
            {"lastHeartbeatTime": "<time>", "type": "Ready"},
        ],
    }
}
# "Node status PATCH #2": the Ready transition
READY_PATCH = {
    "status": {
        "$setElementOrder/conditions": SET_ORDER,
        "conditions": [
            {"lastHeartbeatTime": "<time>", "type": "MemoryPressure"},
            {"lastHeartbeatTime": "<time>", "type": "DiskPressure"},
            {"lastHeartbeatTime": "<time>", "type": "PIDPressure"},
            {
                "lastHeartbeatTime": "<time>",
                "lastTransitionTime": "<time>",
                "message": "kubelet is posting ready status",
                "reason": "KubeletReady",
                "status": "True",
                "type": "Ready",
            },
        ],
    }
}
LEASE_POST = {
    "kind": "Lease",
    "apiVersion": "coordination.k8s.io/v1",
    "metadata": {
        "name": "hollow-1",
        "namespace": "kube-node-lease",
        "ownerReferences": [
            {"apiVersion": "v1", "kind": "Node", "name": "hollow-1", "uid": "<uid>"}
        ],
    },
    "spec": {"holderIdentity": "hollow-1", "leaseDurationSeconds": 40, "renewTime": "<microtime>"},
}
# the Lease as a PUT returned it (kubelet-requests.md "Lease renew #1" response), with values filled in
LEASE_RESPONSE = {
    "kind": "Lease",
    "apiVersion": "coordination.k8s.io/v1",
    "metadata": {
        "name": "hollow-1",
        "namespace": "kube-node-lease",
        "uid": "0d5f9d8e-1c7b-4b0e-9a51-3f1c2d3e4f50",
        "resourceVersion": "4711",
        "creationTimestamp": "2024-05-01T11:59:00Z",
        "ownerReferences": [
            {"apiVersion": "v1", "kind": "Node", "name": "hollow-1", "uid": "node-uid"}
        ],
        "managedFields": [
            {"manager": "kubelet", "operation": "Update", "apiVersion": "coordination.k8s.io/v1"}
        ],
    },
    "spec": {
        "holderIdentity": "hollow-1",
        "leaseDurationSeconds": 40,
        "renewTime": "2024-05-01T11:59:50.123456Z",
    },
}


def test_registration_body() -> None:
    body = node_body(HOLLOW, T0)
    assert normalised(body) == NODE_POST
    for cond in body["status"]["conditions"]:
        assert cond["lastHeartbeatTime"] == cond["lastTransitionTime"] == "2024-05-01T12:00:00Z"


def test_registration_with_cr_fields() -> None:
    spec = KubeletSpec(
        name="n7",
        internal_ips=("10.0.0.7", "fd00::7"),
        capacity={
            "cpu": "20",
            "memory": "100Gi",
            "pods": "200",
            "ephemeral-storage": "100Gi",
            "nvidia.com/gpu": "8",
        },
        allocatable={
            "cpu": "19",
            "memory": "99Gi",
            "pods": "200",
            "ephemeral-storage": "90Gi",
            "nvidia.com/gpu": "8",
        },
        labels={"type": "gpu", "zone": "a"},
        annotations={"note": "x"},
        taints=(Taint("dedicated", "NoSchedule", "gpu"), Taint("flaky", "NoExecute")),
        port=10555,
        pod_cidrs=("10.244.7.0/24", "fd00:10:244:7::/64"),
        arch="arm64",
        network_unavailable_condition=True,
    )
    body = node_body(spec, T0)
    assert body["metadata"]["labels"]["type"] == "gpu"  # the CR's labels win
    assert body["metadata"]["labels"]["zone"] == "a"
    assert body["metadata"]["labels"]["kubernetes.io/arch"] == "arm64"
    assert body["metadata"]["annotations"] == {"note": "x"}
    assert body["spec"] == {
        "podCIDR": "10.244.7.0/24",
        "podCIDRs": ["10.244.7.0/24", "fd00:10:244:7::/64"],
        "providerID": "kubemock://n7",
        "taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            {"key": "flaky", "effect": "NoExecute"},
        ],
    }
    status = body["status"]
    assert status["capacity"]["nvidia.com/gpu"] == "8"
    assert status["allocatable"]["cpu"] == "19"
    assert status["addresses"] == [
        {"type": "InternalIP", "address": "10.0.0.7"},
        {"type": "InternalIP", "address": "fd00::7"},
        {"type": "Hostname", "address": "n7"},
    ]
    assert status["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10555}}
    assert [c["type"] for c in status["conditions"]] == [
        "NetworkUnavailable",
        "MemoryPressure",
        "DiskPressure",
        "PIDPressure",
        "Ready",
    ]
    assert status["conditions"][0]["status"] == "False"
    assert "images" not in status


def test_heartbeat_only_report() -> None:
    current = node_status(HOLLOW, T0)
    later = T0 + timedelta(minutes=5)
    desired = node_status(HOLLOW, later, current)
    assert not status_changed(current, desired)
    patch = node_status_patch(current, desired)
    assert normalised(patch) == HEARTBEAT_PATCH
    assert all(
        c["lastHeartbeatTime"] == "2024-05-01T12:05:00Z" for c in patch["status"]["conditions"]
    )
    # transition times survive the report
    assert all(c["lastTransitionTime"] == "2024-05-01T12:00:00Z" for c in desired["conditions"])
    assert node_status_patch(current, current) == {}


def test_ready_transition_report() -> None:
    current = node_status(HOLLOW, T0)
    current["conditions"][3] = {
        "type": "Ready",
        "status": "False",
        "lastHeartbeatTime": "2024-05-01T12:00:00Z",
        "lastTransitionTime": "2024-05-01T12:00:00Z",
        "reason": "KubeletNotReady",
        "message": "CSINode is not yet initialized",
    }
    desired = node_status(HOLLOW, T0 + timedelta(seconds=10), current)
    assert status_changed(current, desired)
    patch = node_status_patch(current, desired)
    assert normalised(patch) == READY_PATCH
    assert patch["status"]["conditions"][3]["lastTransitionTime"] == "2024-05-01T12:00:10Z"


def test_other_writers_conditions_and_fields_kept() -> None:
    current = node_status(HOLLOW, T0)
    npd = {
        "type": "KernelDeadlock",
        "status": "False",
        "lastHeartbeatTime": "x",
        "lastTransitionTime": "y",
        "reason": "KernelHasNoDeadlock",
        "message": "ok",
    }
    current["conditions"].insert(0, npd)
    current["images"] = [{"names": ["nginx:1.25"]}]
    desired = node_status(HOLLOW, T0 + timedelta(seconds=10), current)
    assert desired["conditions"][0] == npd
    assert [c["type"] for c in desired["conditions"]] == [
        "KernelDeadlock",
        "MemoryPressure",
        "DiskPressure",
        "PIDPressure",
        "Ready",
    ]
    assert desired["images"] == current["images"]
    patch = node_status_patch(current, desired)
    assert patch["status"]["$setElementOrder/conditions"][0] == {"type": "KernelDeadlock"}
    assert len(patch["status"]["conditions"]) == 4  # only the kubelet's heartbeats


def test_capacity_change_is_a_change() -> None:
    current = node_status(HOLLOW, T0)
    bigger = KubeletSpec(
        **{
            **{f: getattr(HOLLOW, f) for f in HOLLOW.__dataclass_fields__},
            "capacity": {**HOLLOW.capacity, "pods": "250"},
        }
    )
    desired = node_status(bigger, T0, current)
    assert status_changed(current, desired)
    assert node_status_patch(current, desired) == {
        "status": {"capacity": {"pods": "250"}, "allocatable": {"pods": "250"}}
    }


def test_lease_create_body() -> None:
    lease = lease_body("hollow-1", "<uid>", datetime(2024, 5, 1, 12, 0, 0, 5, tzinfo=UTC))
    assert normalised(lease_as_json(lease)) == LEASE_POST
    assert lease.spec.renewTime == "2024-05-01T12:00:00.000005Z"
    assert json.loads(encode_lease(lease)) == lease_as_json(lease)


def test_lease_renew_put_body() -> None:
    last = decode_lease(json.dumps(LEASE_RESPONSE).encode())
    renewed = renew_lease(last, T0 + timedelta(seconds=10, microseconds=250000))
    body = json.loads(encode_lease(renewed))
    expected = json.loads(json.dumps(LEASE_RESPONSE))
    del expected["metadata"]["managedFields"]  # an update without them keeps them
    expected["spec"]["renewTime"] = "2024-05-01T12:00:10.250000Z"
    assert body == expected
    assert list(body) == ["kind", "apiVersion", "metadata", "spec"]


def test_lease_renew_repairs_holder_and_owner() -> None:
    broken = msgspec.json.decode(json.dumps(LEASE_RESPONSE).encode())
    broken["spec"]["holderIdentity"] = "someone-else"
    broken["spec"]["leaseDurationSeconds"] = 15
    del broken["metadata"]["ownerReferences"]
    lease = decode_lease(msgspec.json.encode(broken))
    renewed = renew_lease(lease, T0, node_uid="new-node-uid")
    assert (renewed.spec.holderIdentity, renewed.spec.leaseDurationSeconds) == ("hollow-1", 40)
    assert [o.uid for o in renewed.metadata.ownerReferences] == ["new-node-uid"]
    assert renew_lease(lease, T0).metadata.ownerReferences == []


def test_trimmed_lease_renews_as_the_answer_would() -> None:
    answer = json.dumps(LEASE_RESPONSE).encode()
    kept = trim_lease(answer)
    assert b"managedFields" not in kept and len(kept) < len(answer)
    assert decode_lease(kept) == decode_lease(answer)
    at = T0 + timedelta(seconds=10)
    assert encode_lease(renew_lease(decode_lease(kept), at)) == encode_lease(
        renew_lease(decode_lease(answer), at)
    )
