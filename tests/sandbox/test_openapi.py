"""/openapi/v2 and /openapi/v3: the built-in documents and the ones made from CRDs.

The protobuf writer is checked against the real kube-apiserver's own protobuf of its own
JSON document; the custom resources' documents against what the apiextensions apiserver
makes of a schema (v2 drops ``nullable``, v3 keeps it).
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest
import yaml

from fleet.kube import load_config
from fleet.realcp import RunningControlPlane
from fleet.sandbox import RunningSandbox, encode_openapi_v2
from tests.sandbox._http import client

PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "crontabs.stable.example.com"},
    "spec": {
        "group": "stable.example.com",
        "scope": "Namespaced",
        "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "description": "A CronTab runs a command on a schedule.",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "cronSpec": {"type": "string"},
                                    "replicas": {"type": "integer", "nullable": True},
                                    "port": {
                                        "x-kubernetes-int-or-string": True,
                                        "anyOf": [{"type": "integer"}, {"type": "string"}],
                                    },
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def _varint(data: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = data[i]
        i += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, i


def _fields(data: bytes) -> list[tuple[int, Any]]:
    """A protobuf message's fields in order: (number, int or bytes)."""
    out: list[tuple[int, Any]] = []
    i = 0
    while i < len(data):
        tag, i = _varint(data, i)
        wire = tag & 7
        value: Any
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        else:
            size, i = _varint(data, i)
            value, i = data[i : i + size], i + size
        out.append((tag >> 3, value))
    return out


def _named(document: bytes, number: int, entry: int) -> dict[str, bytes]:
    """The name -> value entries of the Document's map message ``number`` (merged)."""
    out: dict[str, bytes] = {}
    for n, message in _fields(document):
        if n == number:
            for m, named in _fields(message):
                if m == entry:
                    parts = dict(_fields(named))
                    out[parts[1].decode()] = parts.get(2, b"")
    return out


def _same(a: bytes, b: bytes) -> bool:
    """Equal messages, where a YAML text (gnostic Any) may differ in style but not in value."""
    if a == b:
        return True
    try:  # YAML maps whose keys the writers order differently
        left, right = yaml.safe_load(a.decode()), yaml.safe_load(b.decode())
        if isinstance(left, dict) and left == right:
            return True
    except (UnicodeDecodeError, yaml.YAMLError):
        pass
    try:
        fa, fb = _fields(a), _fields(b)
    except (IndexError, ValueError):
        fa = fb = []
    if fa and len(fa) == len(fb) and all(x[0] == y[0] for x, y in zip(fa, fb, strict=True)):
        return all(
            x[1] == y[1] or (isinstance(x[1], bytes) and _same(x[1], y[1]))
            for x, y in zip(fa, fb, strict=True)
        )
    try:
        return bool(yaml.safe_load(a.decode()) == yaml.safe_load(b.decode()))
    except (UnicodeDecodeError, yaml.YAMLError):
        return False


@pytest.mark.real
async def test_protobuf_writer_matches_kube_apiserver(
    real_control_plane: RunningControlPlane,
) -> None:
    ssl_context = load_config(real_control_plane.kubeconfig).ssl_context
    assert isinstance(ssl_context, ssl.SSLContext)
    async with httpx.AsyncClient(verify=ssl_context, base_url=real_control_plane.url) as c:
        doc = (await c.get("/openapi/v2", headers={"accept": "application/json"})).json()
        real = (await c.get("/openapi/v2", headers={"accept": PROTOBUF})).content
    mine = encode_openapi_v2(doc)
    for number, entry in ((8, 2), (9, 1)):  # paths, definitions
        theirs, ours = _named(real, number, entry), _named(mine, number, entry)
        # Other tests of the session may add a CRD between the two requests.
        common = [k for k in ours if k in theirs]
        assert len(common) > 0.9 * len(ours)
        assert [k for k in common if not _same(theirs[k], ours[k])] == []
    assert [f for f in _fields(real) if f[0] not in (8, 9)] == [
        f for f in _fields(mine) if f[0] not in (8, 9)
    ]


async def test_builtin_documents(sandbox: RunningSandbox) -> None:
    async with client(sandbox) as c:
        pb = (await c.get("/openapi/v2", headers={"accept": PROTOBUF})).content
        doc = (await c.get("/openapi/v2")).json()
        index = (await c.get("/openapi/v3")).json()["paths"]
        apps = (await c.get(index["apis/apps/v1"]["serverRelativeURL"])).json()
    assert set(_named(pb, 9, 1)) == set(doc["definitions"])
    assert set(_named(pb, 8, 2)) == set(doc["paths"])
    deployment = doc["definitions"]["io.k8s.api.apps.v1.Deployment"]
    assert deployment["x-kubernetes-group-version-kind"] == [
        {"group": "apps", "kind": "Deployment", "version": "v1"}
    ]
    # kubectl validates on the server when the PATCH operation lists fieldValidation.
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert "fieldValidation" in [p.get("name") for p in patch["parameters"]]
    patch3 = apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert "fieldValidation" in [p.get("name") for p in patch3["parameters"]]
    assert patch3["x-kubernetes-group-version-kind"]["kind"] == "Deployment"
    assert {"api/v1", "apis/batch/v1", "apis/policy/v1"} <= set(index)


async def test_crd_documents_follow_the_crd(sandbox: RunningSandbox) -> None:
    name = "com.example.stable.v1.CronTab"
    gv = "apis/stable.example.com/v1"
    async with client(sandbox) as c:
        before = (await c.get("/openapi/v2")).headers["etag"]
        r = await c.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=CRD)
        assert r.status_code == 201, r.text
        v2 = await c.get("/openapi/v2")
        assert v2.headers["etag"] != before
        index = (await c.get("/openapi/v3")).json()["paths"]
        v3 = (await c.get(index[gv]["serverRelativeURL"])).json()
        pb = (await c.get("/openapi/v2", headers={"accept": PROTOBUF})).content
        await c.delete(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/" + CRD["metadata"]["name"]
        )
        after = (await c.get("/openapi/v3")).json()["paths"]
        assert (await c.get("/openapi/v3/" + gv)).status_code == 404
    assert gv not in after

    schema2 = v2.json()["definitions"][name]
    spec2 = schema2["properties"]["spec"]["properties"]
    assert spec2["replicas"] == {}  # nullable: OpenAPI v2 cannot say it, so no type
    assert spec2["port"] == {"x-kubernetes-int-or-string": True}
    assert schema2["properties"]["metadata"]["$ref"].endswith("meta.v1.ObjectMeta")
    assert schema2["x-kubernetes-group-version-kind"] == [
        {"group": "stable.example.com", "kind": "CronTab", "version": "v1"}
    ]
    assert name in _named(pb, 9, 1)
    assert "/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}/status" in _named(
        pb, 8, 2
    )

    schemas = v3["components"]["schemas"]
    spec3 = schemas[name]["properties"]["spec"]["properties"]
    assert spec3["replicas"] == {"type": "integer", "nullable": True}
    assert schemas[name]["description"] == "A CronTab runs a command on a schedule."
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in schemas
    item = v3["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"]
    assert "fieldValidation" in [p["name"] for p in item["patch"]["parameters"]]
