"""Unknown fields of built-in kinds: kubectl 1.27 and 1.33, the sandbox and kube-apiserver.

kubectl >= 1.27 validates with ``fieldValidation=Strict`` when the server's OpenAPI lists the
parameter (the sandbox's does), else against the OpenAPI schemas itself (kube-apiserver v1.24:
its ``ServerSideFieldValidation`` gate is alpha and off). Either way ``apply`` of a manifest
with a typo fails and creates nothing, ``--validate=false`` creates the object without the
field. The sandbox's own answers (400/422/500 texts, ``Warning`` headers, ``Ignore``) are
checked against what kube-apiserver v1.24 answered with the gate on (recorded in the
constants below; current servers add the field's path, ``spec.foo`` where v1.24 said ``foo``,
in create and update bodies: docs/sandbox.md).
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx
import pytest
import trio
import yaml

from fleet.sandbox import RunningSandbox
from tests._apiserver import Apiserver, unique

KUBECTL = {v: f"/usr/lib/google-cloud-sdk/bin/kubectl.{v}" for v in ("1.27", "1.33")}

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata: {name: NAME}
spec:
  foo: 1
  replicas: 1
  selector: {matchLabels: {app: NAME}}
  template:
    metadata: {labels: {app: NAME}}
    spec:
      containers: [{name: c, image: nginx, bar: 2}]
"""

# What kube-apiserver answers (the SMP one as v1.24 with the gate on gave it; the path-less
# "foo" of v1.24's JSON decoder became "spec.foo" in later servers).
STRICT_CREATE = (
    'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
    'unknown field "spec.foo", unknown field "spec.template.spec.containers[0].bar"'
)
STRICT_SMP = (
    ' "" is invalid: patch: Invalid value: "map[spec:map[foo:1 template:map[spec:map[containers:'
    '[map[bar:1 name:c]]]]]]": strict decoding error: unknown field "spec.foo", '
    'unknown field "spec.template.spec.containers[0].bar"'
)
APPLY_UNKNOWN = (
    "failed to create typed patch object (/NAME; apps/v1, Kind=Deployment): "
    ".spec.foo: field not declared in schema"
)


async def _kubectl(
    version: str, kubeconfig: Any, *args: str, stdin: str | None = None
) -> tuple[int, str, str]:
    done = await trio.run_process(
        [KUBECTL[version], "--kubeconfig", str(kubeconfig), *args],
        stdin=stdin.encode() if stdin is not None else b"",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.mark.kubectl
@pytest.mark.parametrize("version", ["1.27", "1.33"])
async def test_kubectl_refuses_a_typo(apiserver: Apiserver, version: str) -> None:
    name = unique("typo")
    manifest = DEPLOYMENT.replace("NAME", name)
    kc = apiserver.kubeconfig
    code, _out, err = await _kubectl(version, kc, "apply", "-f", "-", stdin=manifest)
    assert code != 0
    if apiserver.is_real:  # kubectl's own check against the v1.24 schemas
        assert 'unknown field "foo" in io.k8s.api.apps.v1.DeploymentSpec' in err
    else:
        assert STRICT_CREATE in err
    code, _out, err = await _kubectl(version, kc, "get", "deployment", name)
    assert code != 0 and "NotFound" in err

    code, out, err = await _kubectl(
        version, kc, "create", "--validate=warn", "--dry-run=server", "-f", "-", stdin=manifest
    )
    assert code == 0, err
    if apiserver.is_real:  # no server-side validation to warn with: nothing said
        assert "unknown field" not in err
    else:
        assert 'Warning: unknown field "spec.foo"' in err
        assert 'Warning: unknown field "spec.template.spec.containers[0].bar"' in err
    code, out, err = await _kubectl(
        version, kc, "apply", "--validate=false", "-f", "-", stdin=manifest
    )
    assert code == 0, err
    try:
        code, out, err = await _kubectl(version, kc, "get", "deployment", name, "-o", "json")
        got = json.loads(out)
        assert "foo" not in got["spec"]
        assert "bar" not in got["spec"]["template"]["spec"]["containers"][0]
        # An apply over the existing object is a strategic merge patch (with the fields the
        # live object lacks: the typos again).
        code, _out, err = await _kubectl(
            version, kc, "apply", "-f", "-", stdin=manifest.replace("replicas: 1", "replicas: 2")
        )
        assert code != 0
        if not apiserver.is_real:
            assert 'strict decoding error: unknown field "spec.foo"' in err
        code, out, _err = await _kubectl(
            version, kc, "get", "deployment", name, "-o", "jsonpath={.spec.replicas}"
        )
        assert out == "1"
    finally:
        await _kubectl(version, kc, "delete", "deployment", name, "--wait=false")


async def _call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: Any,
    content_type: str = "application/json",
) -> tuple[int, Any, list[str]]:
    data = None if body is None else json.dumps(body).encode()
    r = await client.request(method, path, content=data, headers={"content-type": content_type})
    return r.status_code, r.json(), r.headers.get_list("warning")


def _deployment(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(DEPLOYMENT.replace("NAME", name))
    return doc


async def test_field_validation_answers(sandbox: RunningSandbox) -> None:
    """Every verb's answer by directive, as kube-apiserver (1.27+) gives them."""
    name = "d1"
    base = "/apis/apps/v1/namespaces/default/deployments"
    assert sandbox.ca_pem is not None
    tls = ssl.create_default_context(cadata=sandbox.ca_pem.decode())
    async with httpx.AsyncClient(
        base_url=sandbox.url, verify=tls, headers={"authorization": f"Bearer {sandbox.token}"}
    ) as client:
        status, err, _ = await _call(
            client, "POST", base + "?fieldValidation=Strict", _deployment(name)
        )
        assert (status, err["reason"], err["message"]) == (400, "BadRequest", STRICT_CREATE)
        status, _, _ = await _call(client, "GET", base + "/" + name, None)
        assert status == 404

        status, created, warnings = await _call(client, "POST", base, _deployment(name))
        assert status == 201
        assert warnings == [
            '299 - "unknown field \\"spec.foo\\""',
            '299 - "unknown field \\"spec.template.spec.containers[0].bar\\""',
        ]
        assert "foo" not in created["spec"]
        assert "bar" not in created["spec"]["template"]["spec"]["containers"][0]

        smp = {"spec": {"foo": 1, "template": {"spec": {"containers": [{"name": "c", "bar": 1}]}}}}
        status, err, _ = await _call(
            client,
            "PATCH",
            f"{base}/{name}?fieldValidation=Strict",
            smp,
            "application/strategic-merge-patch+json",
        )
        assert (status, err["reason"], err["message"]) == (422, "Invalid", STRICT_SMP)
        assert err["details"]["causes"][0]["field"] == "patch"

        status, err, _ = await _call(
            client,
            "PATCH",
            f"{base}/{name}?fieldValidation=Strict",
            {"spec": {"foo": 1, "replicas": 2}},
            "application/merge-patch+json",
        )
        assert status == 422
        assert err["message"].endswith('": strict decoding error: unknown field "spec.foo"')
        assert err["message"].startswith(' "" is invalid: patch: Invalid value: "{')

        status, patched, warnings = await _call(
            client,
            "PATCH",
            f"{base}/{name}?fieldValidation=Ignore",
            {"spec": {"foo": 1, "replicas": 2}},
            "application/merge-patch+json",
        )
        assert (status, warnings, patched["spec"]["replicas"]) == (200, [], 2)
        assert "foo" not in patched["spec"]

        status, patched, warnings = await _call(
            client,
            "PATCH",
            f"{base}/{name}",
            [{"op": "add", "path": "/spec/foo", "value": 1}],
            "application/json-patch+json",
        )
        assert (status, warnings) == (200, ['299 - "unknown field \\"spec.foo\\""'])
        assert "foo" not in patched["spec"]

        current = patched
        current["metadata"]["zzz"] = 1
        current["spec"]["foo"] = 3
        status, err, _ = await _call(
            client, "PUT", f"{base}/{name}?fieldValidation=Strict", current
        )
        assert status == 400 and err["message"].endswith(
            'strict decoding error: unknown field "metadata.zzz", unknown field "spec.foo"'
        )

        apply = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}}
        apply["spec"] = {"foo": 1}
        for fv in ("Ignore", "Strict"):
            status, err, _ = await _call(
                client,
                "PATCH",
                f"{base}/{name}?fieldManager=x&force=true&fieldValidation={fv}",
                apply,
                "application/apply-patch+yaml",
            )
            assert (status, err["message"]) == (500, APPLY_UNKNOWN.replace("NAME", name))

        status, err, _ = await _call(
            client, "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
            {"metadata": {"name": "c"}, "data": {"any key": "x"}, "spec": {}},
        )  # fmt: skip
        assert (status, err["message"]) == (
            400,
            'ConfigMap in version "v1" cannot be handled as a ConfigMap: '
            'strict decoding error: unknown field "spec"',
        )
