"""Protobuf request bodies: the wire decoder, and kubectl 1.33's create generators (which send them).

kubectl 1.27 sends the same generators' objects as JSON, so the two versions must store the same
objects; kubectl's own ``--dry-run=client -o json`` rendering of each object must be contained in
what the sandbox stored (the server only adds defaults and metadata).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.machinery import PROTOBUF
from fleet.sandbox import RunningSandbox, _protobuf
from fleet.sandbox._status import StatusError

KUBECTL_127 = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27"
KUBECTL_133 = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"


# --- a minimal encoder, to build bodies as gogo-protobuf does -------------------------------------
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _num(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _len(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _entry(number: int, key: str, value: bytes | str) -> bytes:
    return _len(number, _len(1, key) + _len(2, value))


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return (
        _protobuf.MAGIC
        + _len(1, _len(1, api_version) + _len(2, kind))
        + _len(2, raw)
        + _len(3, "")
        + _len(4, "")
    )


def _meta(name: str, **extra: bytes) -> bytes:
    # Go writes every plain field, zero or not: generateName "", namespace "", generation 0,
    # an empty creationTimestamp.
    return (
        _len(1, name)
        + _len(2, "")
        + _len(3, "")
        + _num(7, 0)
        + _len(8, b"")
        + b"".join(extra.values())
    )


def test_decodes_namespace_and_drops_go_zero_values() -> None:
    raw = _len(1, _meta("ns1", labels=_entry(11, "a", "b"))) + _len(2, b"") + _len(3, _len(1, ""))
    assert _protobuf.decode(_envelope("v1", "Namespace", raw), "Namespace") == {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": "ns1", "labels": {"a": "b"}},
        "spec": {},
        "status": {},
    }


def test_decodes_secret_bytes_configmap_maps_and_pointer_zeros() -> None:
    secret = _len(1, _meta("s")) + _entry(2, "k", b"\x00\xffv") + _len(3, "Opaque") + _num(5, 0)
    got = _protobuf.decode(_envelope("v1", "Secret", secret), "Secret")
    assert got["data"] == {"k": "AP92"} and got["type"] == "Opaque"
    assert got["immutable"] is False  # a *bool set to false is kept
    cm = _len(1, _meta("c")) + _entry(2, "a", "1") + _entry(2, "b", "") + _entry(3, "bin", b"\x01")
    assert _protobuf.decode(_envelope("v1", "ConfigMap", cm), "ConfigMap")["data"] == {
        "a": "1",
        "b": "",
    }


def test_decodes_deployment_nested_messages_int_or_string_and_negative_ints() -> None:
    container = _len(1, "c") + _len(2, "nginx") + _len(3, "sleep") + _len(3, "1") + _len(8, b"")
    container += _len(6, _len(1, "") + _num(3, 8080) + _len(4, "TCP"))
    template = _len(1, _len(1, "") + _entry(11, "app", "d")) + _len(
        2, _len(2, container) + _num(4, (1 << 64) - 5)
    )
    rolling = _len(1, _num(1, 1) + _num(2, 0) + _len(3, "25%")) + _len(2, _num(1, 0) + _num(2, 2))
    spec = (
        _num(1, 0)
        + _len(2, _entry(1, "app", "d"))
        + _len(3, template)
        + _len(4, _len(1, "RollingUpdate") + _len(2, rolling))
        + _num(5, 0)
        + _num(7, 0)
    )
    got = _protobuf.decode(
        _envelope("apps/v1", "Deployment", _len(1, _meta("d")) + _len(2, spec)), "Deployment"
    )
    assert got["spec"] == {
        "replicas": 0,  # *int32: kept although zero
        "selector": {"matchLabels": {"app": "d"}},
        "template": {
            "metadata": {"labels": {"app": "d"}},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "nginx",
                        "command": ["sleep", "1"],
                        "resources": {},
                        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    }
                ],
                "terminationGracePeriodSeconds": -5,
            },
        },
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 2},
        },
    }


def test_service_ports_and_quantities() -> None:
    port = (
        _len(1, "http")
        + _len(2, "TCP")
        + _num(3, 80)
        + _len(4, _num(1, 0) + _num(2, 8080))
        + _num(5, 0)
    )
    svc = _len(1, _meta("s")) + _len(
        2, _len(1, port) + _entry(2, "app", "s") + _len(4, "ClusterIP")
    )
    got = _protobuf.decode(_envelope("v1", "Service", svc), "Service")
    assert got["spec"] == {
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
        "selector": {"app": "s"},
        "type": "ClusterIP",
    }
    quota = _len(1, _meta("q")) + _len(2, _entry(1, "cpu", _len(1, "500m")))
    assert _protobuf.decode(_envelope("v1", "ResourceQuota", quota), "ResourceQuota")["spec"] == {
        "hard": {"cpu": "500m"}
    }


def test_malformed_and_unknown_kinds() -> None:
    with pytest.raises(StatusError) as no_magic:
        _protobuf.decode(b'{"kind":"Namespace"}', "Namespace")
    assert no_magic.value.code == 400 and "expected prefix" in no_magic.value.message
    with pytest.raises(StatusError) as truncated:
        _protobuf.decode(_protobuf.MAGIC + b"\x0a\x10ab", "Namespace")
    assert truncated.value.code == 400 and "unable to decode protobuf" in truncated.value.message
    with pytest.raises(StatusError) as unknown:
        _protobuf.decode(_envelope("networking.k8s.io/v1", "Ingress", b""), "Ingress")
    assert unknown.value.code == 415 and unknown.value.reason == "UnsupportedMediaType"


async def test_protobuf_post_over_http(sandbox: RunningSandbox) -> None:
    headers = {
        "Authorization": f"Bearer {sandbox.token}",
        "Content-Type": PROTOBUF,
        "Accept": f"{PROTOBUF},application/json",
    }
    body = _envelope("v1", "ConfigMap", _len(1, _meta("pb")) + _entry(2, "k", "v"))
    async with httpx.AsyncClient(verify=False, base_url=sandbox.url, headers=headers) as client:
        created = await client.post("/api/v1/namespaces/default/configmaps", content=body)
        assert created.status_code == 201, created.text
        assert created.headers["content-type"] == "application/json"
        assert created.json()["data"] == {"k": "v"}
        bad = await client.post("/api/v1/namespaces/default/configmaps", content=b"k8s\x00\xff")
        assert bad.status_code == 400 and bad.json()["reason"] == "BadRequest"
        ingress = await client.post(
            "/api/v1/namespaces/default/configmaps",
            content=_envelope("networking.k8s.io/v1", "Ingress", b""),
        )
        assert ingress.status_code == 415
        got = await client.get("/api/v1/namespaces/default/configmaps/pb")
        assert got.json()["data"] == {"k": "v"}


# --- kubectl's create generators ----------------------------------------------------------------
Run = Callable[..., subprocess.CompletedProcess[str]]

GENERATORS: list[tuple[str, list[str]]] = [
    ("configmap/cm", ["create", "configmap", "cm", "--from-literal=a=1", "--from-literal=b=two"]),
    (
        "secret/sec",
        ["create", "secret", "generic", "sec", "--from-literal=user=admin", "--type=Opaque"],
    ),
    ("serviceaccount/sa", ["create", "serviceaccount", "sa"]),
    (
        "deployment/web",
        ["create", "deployment", "web", "--image=nginx:1.25", "--replicas=2", "--port=8080"],
    ),
    ("deployment/cmd", ["create", "deployment", "cmd", "--image=busybox", "--", "sleep", "3600"]),
    ("service/svc", ["create", "service", "clusterip", "svc", "--tcp=80:8080"]),
    ("service/np", ["create", "service", "nodeport", "np", "--tcp=81:http"]),
    (
        "resourcequota/q",
        ["create", "quota", "q", "--hard=pods=3,requests.cpu=500m", "--scopes=BestEffort"],
    ),
]


def _contained(want: Any, got: Any, path: str = "") -> list[str]:
    """Where ``want`` (kubectl's JSON) is not part of ``got`` (what the server stored)."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{path}: {got!r} is not an object"]
        return [
            d
            for k, v in want.items()
            if v is not None
            for d in _contained(v, got.get(k), f"{path}.{k}")
        ]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: {got!r} != {want!r}"]
        return [
            d
            for i, (w, g) in enumerate(zip(want, got, strict=True))
            for d in _contained(w, g, f"{path}[{i}]")
        ]
    return [] if want == got else [f"{path}: {got!r} != {want!r}"]


@pytest.fixture
def run(shared_sandbox: RunningSandbox, tmp_path: Path) -> Run:
    def run(binary: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [
            binary,
            "--kubeconfig",
            str(shared_sandbox.kubeconfig),
            "--cache-dir",
            str(tmp_path / "cache"),
            *args,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if check:
            assert proc.returncode == 0, f"{cmd}: {proc.stderr}"
        return proc

    return run


@pytest.mark.kubectl
@pytest.mark.parametrize("binary", [KUBECTL_127, KUBECTL_133], ids=["1.27", "1.33"])
def test_kubectl_create_generators(run: Run, binary: str) -> None:
    ns = "pb-" + re.sub(r"\D", "", binary)
    created = run(binary, "create", "namespace", ns, "-v=8")
    assert f"namespace/{ns} created" in created.stdout
    sends_protobuf = f"Content-Type: {PROTOBUF}" in created.stderr
    assert sends_protobuf == (binary == KUBECTL_133), (
        "which kubectl sends protobuf changed: revise this test"
    )
    namespace = json.loads(run(binary, "get", "namespace", ns, "-o", "json").stdout)
    assert namespace["status"]["phase"] == "Active"
    assert namespace["metadata"]["labels"] == {"kubernetes.io/metadata.name": ns}
    for ref, args in GENERATORS:
        dry_run = [*args[:2], "--dry-run=client", "-o", "json", *args[2:]]  # before any "--"
        client_side = json.loads(run(binary, "-n", ns, *dry_run).stdout)
        out = run(binary, "-n", ns, *args).stdout
        assert "created" in out, out
        stored = json.loads(run(binary, "-n", ns, "get", ref, "-o", "json").stdout)
        assert _contained(client_side, stored) == [], ref
        assert stored["metadata"]["uid"] and stored["metadata"]["namespace"] == ns
    secret = json.loads(run(binary, "-n", ns, "get", "secret", "sec", "-o", "json").stdout)
    assert secret["data"] == {"user": "YWRtaW4="} and secret["type"] == "Opaque"
    web = json.loads(run(binary, "-n", ns, "get", "deployment", "web", "-o", "json").stdout)
    assert web["spec"]["replicas"] == 2
    assert web["spec"]["template"]["spec"]["containers"][0]["ports"] == [
        {"containerPort": 8080, "protocol": "TCP"}
    ]
    assert web["spec"]["strategy"]["type"] == "RollingUpdate"  # server default
    cmd = json.loads(run(binary, "-n", ns, "get", "deployment", "cmd", "-o", "json").stdout)
    assert cmd["spec"]["template"]["spec"]["containers"][0]["command"] == ["sleep", "3600"]
    np = json.loads(run(binary, "-n", ns, "get", "service", "np", "-o", "json").stdout)
    assert np["spec"]["type"] == "NodePort" and np["spec"]["ports"][0]["targetPort"] == "http"
    assert "configmap/cm" in run(binary, "-n", ns, "get", "configmaps", "-o", "name").stdout
    assert run(binary, "delete", "namespace", ns, "--wait=false").returncode == 0
