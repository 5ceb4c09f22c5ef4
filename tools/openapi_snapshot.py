"""Take the sandbox's OpenAPI snapshot from a real kube-apiserver (``fleet/sandbox/_openapi.json.xz``).

Run from the repository root with the real binaries (``../shared/realk8s``)::

    .venv/bin/python tools/openapi_snapshot.py ../shared/realk8s

It starts the real control plane (kube-apiserver only, OpenAPI v3 on, every API on), fetches
``/openapi/v2`` (JSON) and ``/openapi/v3/<group-version>`` for the group-versions the sandbox
serves, and keeps what the sandbox needs: the v2 paths of those group-versions and the
definitions they reach, the v3 documents whole. Three edits, each what a newer apiserver
publishes and the sandbox does: the ``fieldValidation`` query parameter on POST, PUT and PATCH
(v1.25+; kubectl then validates on the server, not against these older schemas), the
``x-kubernetes-group-version-kind``/``-action`` extensions on v3 operations (v1.27+; kubectl's
v3 parameter check reads them), and flowcontrol ``v1beta3`` made from ``v1beta2`` (v1.26+;
``assuredConcurrencyShares`` renamed ``nominalConcurrencyShares``).
"""

from __future__ import annotations

import copy
import json
import lzma
import sys
from pathlib import Path
from typing import Any

import httpx
import trio

from fleet.kube import load_config
from fleet.realcp import RealControlPlaneSettings, serve_real_control_plane

OUT = Path(__file__).resolve().parent.parent / "fleet" / "sandbox" / "_openapi.json.xz"
SERVED = (
    "api/v1",
    "apis/admissionregistration.k8s.io/v1",
    "apis/apiextensions.k8s.io/v1",
    "apis/apps/v1",
    "apis/autoscaling/v1",
    "apis/autoscaling/v2",
    "apis/batch/v1",
    "apis/certificates.k8s.io/v1",
    "apis/coordination.k8s.io/v1",
    "apis/discovery.k8s.io/v1",
    "apis/events.k8s.io/v1",
    "apis/flowcontrol.apiserver.k8s.io/v1beta2",
    "apis/networking.k8s.io/v1",
    "apis/node.k8s.io/v1",
    "apis/policy/v1",
    "apis/rbac.authorization.k8s.io/v1",
    "apis/scheduling.k8s.io/v1",
    "apis/storage.k8s.io/v1",
)
FIELD_VALIDATION_DESCRIPTION = (
    "fieldValidation instructs the server on how to handle objects in the request "
    "(POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This "
    "will ignore any unknown fields that are silently dropped from the object, and will ignore "
    "all but the last duplicate field that the decoder encounters. This is the default behavior "
    "prior to v1.23. - Warn: This will send a warning via the standard warning response header "
    "for each unknown field that is dropped from the object, and for each duplicate field that "
    "is encountered. The request will still succeed if there are no other errors, and will "
    "only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: "
    "This will fail the request with a BadRequest error if any unknown fields would be dropped "
    "from the object, or if any duplicate fields are present. The error returned from the "
    "server will contain all unknown and duplicate fields encountered."
)
WRITES = ("post", "put", "patch")
FLOWCONTROL_BETA2, FLOWCONTROL_BETA3 = (
    "apis/flowcontrol.apiserver.k8s.io/v1beta2",
    "apis/flowcontrol.apiserver.k8s.io/v1beta3",
)


def _refs(node: Any, out: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            out.add(ref.rsplit("/", 1)[-1])
        for v in node.values():
            _refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _refs(v, out)


def _reachable(roots: set[str], definitions: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in definitions:
            continue
        seen.add(name)
        found: set[str] = set()
        _refs(definitions[name], found)
        todo.extend(found - seen)
    return seen


def trim_v2(doc: dict[str, Any]) -> dict[str, Any]:
    prefixes = tuple("/" + gv + "/" for gv in SERVED)
    paths = {
        p: item for p, item in doc["paths"].items() if p.startswith(prefixes) or p + "/" in prefixes
    }
    for item in paths.values():
        for verb in WRITES:
            if verb in item:
                item[verb].setdefault("parameters", []).append(
                    {
                        "uniqueItems": True,
                        "type": "string",
                        "description": FIELD_VALIDATION_DESCRIPTION,
                        "name": "fieldValidation",
                        "in": "query",
                    }
                )
    roots: set[str] = set()
    _refs(paths, roots)
    roots |= {
        name
        for name, schema in doc["definitions"].items()
        if any(
            f"{'api' if not g.get('group') else 'apis/' + g['group']}/{g['version']}" in SERVED
            for g in schema.get("x-kubernetes-group-version-kind") or []
        )
    }
    keep = _reachable(roots, doc["definitions"])
    return {
        "swagger": doc["swagger"],
        "info": doc["info"],
        "paths": paths,
        "definitions": {k: v for k, v in doc["definitions"].items() if k in keep},
        "securityDefinitions": doc["securityDefinitions"],
        "security": doc["security"],
    }


def edit_v3(gv: str, doc: dict[str, Any], v2_paths: dict[str, Any]) -> dict[str, Any]:
    for path, item in doc["paths"].items():
        v2_item = v2_paths.get(path) or {}
        for verb, op in item.items():
            if verb == "parameters" or not isinstance(op, dict):
                continue
            for ext in ("x-kubernetes-action", "x-kubernetes-group-version-kind"):
                if ext in (v2_item.get(verb) or {}):
                    op[ext] = v2_item[verb][ext]
            if verb in WRITES:
                op.setdefault("parameters", []).append(
                    {
                        "name": "fieldValidation",
                        "in": "query",
                        "description": FIELD_VALIDATION_DESCRIPTION,
                        "schema": {"type": "string", "uniqueItems": True},
                    }
                )
    return doc


def flowcontrol_beta3(beta2: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(beta2)
    text = text.replace("flowcontrol.v1beta2", "flowcontrol.v1beta3")
    text = text.replace(
        "flowcontrol.apiserver.k8s.io/v1beta2", "flowcontrol.apiserver.k8s.io/v1beta3"
    )
    text = text.replace('"version": "v1beta2"', '"version": "v1beta3"')
    text = text.replace("FlowcontrolApiserverV1beta2", "FlowcontrolApiserverV1beta3")
    text = text.replace("flowcontrolApiserver_v1beta2", "flowcontrolApiserver_v1beta3")
    text = text.replace("assuredConcurrencyShares", "nominalConcurrencyShares")
    out: dict[str, Any] = json.loads(text)
    return out


async def fetch(binaries: Path) -> dict[str, Any]:
    settings = RealControlPlaneSettings(
        binaries=binaries,
        controller_manager=False,
        scheduler=False,
        apiserver_flags=("--feature-gates=OpenAPIV3=true", "--runtime-config=api/all=true"),
    )
    async with trio.open_nursery() as nursery:
        running = await nursery.start(serve_real_control_plane, settings)
        ssl_context = load_config(running.kubeconfig).ssl_context
        async with httpx.AsyncClient(verify=ssl_context, base_url=running.url, timeout=120) as c:
            v2 = (await c.get("/openapi/v2", headers={"accept": "application/json"})).json()
            v3 = {gv: (await c.get(f"/openapi/v3/{gv}")).json() for gv in SERVED}
            version = (await c.get("/version")).json()["gitVersion"]
        nursery.cancel_scope.cancel()
    v2 = trim_v2(v2)
    v3 = {gv: edit_v3(gv, doc, v2["paths"]) for gv, doc in v3.items()}
    beta2_paths = {p: i for p, i in v2["paths"].items() if p.startswith("/" + FLOWCONTROL_BETA2)}
    v2["paths"].update(flowcontrol_beta3({"paths": beta2_paths})["paths"])
    v2["definitions"].update(
        {
            k: d
            for k, d in flowcontrol_beta3({"d": v2["definitions"]})["d"].items()
            if ".flowcontrol.v1beta3." in k
        }
    )
    v3[FLOWCONTROL_BETA3] = flowcontrol_beta3(copy.deepcopy(v3[FLOWCONTROL_BETA2]))
    return {"source": f"kube-apiserver {version}", "v2": v2, "v3": v3}


def main() -> None:
    snapshot = trio.run(fetch, Path(sys.argv[1]))
    data = json.dumps(snapshot, separators=(",", ":"), sort_keys=False).encode()
    OUT.write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    print(f"{OUT}: {OUT.stat().st_size} bytes ({len(data)} uncompressed)")


if __name__ == "__main__":
    main()
