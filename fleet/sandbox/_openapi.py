"""The OpenAPI documents the sandbox serves: ``/openapi/v2`` and ``/openapi/v3``.

The built-in part is a snapshot of a real kube-apiserver's documents
(``_openapi.json.xz``, taken by ``tools/openapi_snapshot.py``: the v2 paths and
definitions of the group-versions the sandbox serves, the v3 document of each, with
the edits that script lists). Custom resources get what the apiextensions apiserver
builds from each served version's ``openAPIV3Schema``: a definition named for the
reversed group (``com.example.stable.v1.CronTab``) with the standard apiVersion,
kind and metadata properties and the ``x-kubernetes-group-version-kind`` extension,
its List, and the paths of the resource with their operations. In v2, which has no
``nullable`` and no ``anyOf``/``oneOf``/``not``, those are dropped as the apiserver
drops them (a nullable field loses its type).

The snapshot is read at the first OpenAPI request, its entries kept as raw JSON; the
documents are built again only when a CRD changes. So ``kubectl explain`` works for
built-ins and custom resources, and kubectl's check for the ``fieldValidation``
parameter finds it (the sandbox validates on the server).
"""

from __future__ import annotations

import copy
import hashlib
import lzma
from importlib import resources
from typing import Any

import msgspec

from fleet.sandbox._crds import CRD_KEY
from fleet.sandbox._openapi_proto import encode_document
from fleet.sandbox._registry import Registry
from fleet.sandbox._store import Event, Key, Store

__all__ = ["OpenApi"]

SNAPSHOT = "_openapi.json.xz"
_REF_V2, _REF_V3 = "#/definitions/", "#/components/schemas/"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_API_VERSION_DESCRIPTION = (
    "APIVersion defines the versioned schema of this representation of an object. Servers "
    "should convert recognized schemas to the latest internal value, and may reject "
    "unrecognized values. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"
)
_KIND_DESCRIPTION = (
    "Kind is a string value representing the REST resource this object represents. Servers "
    "may infer this from the endpoint the client submits requests to. Cannot be updated. In "
    "CamelCase. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)
_METADATA_DESCRIPTION = (
    "Standard object's metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
_LIST_METADATA_DESCRIPTION = (
    "Standard list metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)
_FIELD_VALIDATION = "fieldValidation"
_MEDIA = ["application/json", "application/yaml"]
_V3_MISSING_META = "apis/apiextensions.k8s.io/v1"
"""The built-in v3 document the meta/v1 schemas a custom resource's document needs are copied from."""
_V3_SCALE, _SCALE = "apis/autoscaling/v1", "io.k8s.api.autoscaling.v1.Scale"
"""The same for the ``scale`` subresource's Scale (and ScaleSpec, ScaleStatus)."""


class _V2(msgspec.Struct):
    swagger: str
    info: dict[str, Any]
    paths: dict[str, msgspec.Raw]
    definitions: dict[str, msgspec.Raw]
    securityDefinitions: dict[str, Any]
    security: list[Any]


class _Snapshot(msgspec.Struct):
    source: str
    v2: _V2
    v3: dict[str, msgspec.Raw]


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _definition_name(group: str, version: str, kind: str) -> str:
    return ".".join([*reversed(group.split(".")), version, kind])


def _v2_schema(s: Any) -> Any:
    """A structural schema as OpenAPI v2 can say it (apiextensions' ToStructuralOpenAPIV2)."""
    if isinstance(s, list):
        return [_v2_schema(i) for i in s]
    if not isinstance(s, dict):
        return s
    out = {k: _v2_schema(v) for k, v in s.items() if k not in ("anyOf", "oneOf", "not", "nullable")}
    if s.get("nullable") or s.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        if s.get("nullable"):
            for key in ("items", "properties", "additionalProperties"):
                out.pop(key, None)
    if "properties" in s:
        out["properties"] = {k: _v2_schema(v) for k, v in s["properties"].items()}
    return out


def _hash(body: bytes) -> str:
    return hashlib.sha512(body).hexdigest().upper()


class OpenApi:
    """Builds and caches the sandbox's OpenAPI documents (see the module docstring)."""

    def __init__(self, store: Store, registry: Registry, version: str) -> None:
        self.store = store
        self.registry = registry
        self.version = version
        self._snapshot: _Snapshot | None = None
        self._builtin_proto: bytes | None = None
        self._v3_meta: dict[str, Any] | None = None
        self._cache: dict[str, tuple[bytes, str]] = {}
        store.on_commit.append(self._on_commit)

    def _on_commit(self, key: Key, ev: Event) -> None:
        if key == CRD_KEY:
            self._cache.clear()

    # --- the snapshot ---------------------------------------------------------------------
    @property
    def snapshot(self) -> _Snapshot:
        if self._snapshot is None:
            data = resources.files("fleet.sandbox").joinpath(SNAPSHOT).read_bytes()
            self._snapshot = msgspec.json.decode(lzma.decompress(data), type=_Snapshot)
        return self._snapshot

    def _served_builtin(self, path: str) -> bool:
        parts = path.strip("/").split("/")
        if parts[0] == "api":
            return self.registry.group_version("", parts[1]) is not None
        return len(parts) >= 3 and self.registry.group_version(parts[1], parts[2]) is not None

    def _crd_versions(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        out = []
        for crd in self.store.collection(CRD_KEY).objects.values():
            for version in crd.get("spec", {}).get("versions") or []:
                if version.get("served", True):
                    out.append((crd, version))
        return out

    # --- v2 --------------------------------------------------------------------------------
    def _crd_v2(self) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        definitions: dict[str, Any] = {}
        for crd, version in self._crd_versions():
            _add_custom(crd, version, paths, definitions, v3=False)
        return {"paths": paths, "definitions": definitions}

    def v2_json(self) -> tuple[bytes, str]:
        """The v2 document as JSON, and its ETag."""
        if "v2" not in self._cache:
            snap = self.snapshot
            crd = self._crd_v2()
            doc = {
                "swagger": snap.v2.swagger,
                "info": {"title": "Kubernetes", "version": self.version},
                "paths": {
                    **{p: v for p, v in snap.v2.paths.items() if self._served_builtin(p)},
                    **crd["paths"],
                },
                "definitions": {**snap.v2.definitions, **crd["definitions"]},
                "securityDefinitions": snap.v2.securityDefinitions,
                "security": snap.v2.security,
            }
            body = msgspec.json.encode(doc)
            self._cache["v2"] = body, f'"{_hash(body)}"'
        return self._cache["v2"]

    def v2_proto(self) -> tuple[bytes, str]:
        """The v2 document as gnostic protobuf, and its ETag (the JSON document's)."""
        if "v2pb" not in self._cache:
            if self._builtin_proto is None:
                snap = self.snapshot
                self._builtin_proto = encode_document(
                    {
                        "swagger": snap.v2.swagger,
                        "info": {"title": "Kubernetes", "version": self.version},
                        "paths": {
                            p: msgspec.json.decode(v)
                            for p, v in snap.v2.paths.items()
                            if self._served_builtin(p)
                        },
                        "definitions": {
                            k: msgspec.json.decode(v) for k, v in snap.v2.definitions.items()
                        },
                        "securityDefinitions": snap.v2.securityDefinitions,
                        "security": snap.v2.security,
                    }
                )
            # Appended messages merge: the custom resources' paths and definitions join the
            # built-in ones (see _openapi_proto).
            body = self._builtin_proto + encode_document(self._crd_v2())
            self._cache["v2pb"] = body, self.v2_json()[1]
        return self._cache["v2pb"]

    # --- v3 --------------------------------------------------------------------------------
    def _meta_schemas(self) -> dict[str, Any]:
        if self._v3_meta is None:
            doc = msgspec.json.decode(self.snapshot.v3[_V3_MISSING_META])
            self._v3_meta = {
                k: v for k, v in doc["components"]["schemas"].items() if k.startswith(_META)
            }
            scale = msgspec.json.decode(self.snapshot.v3[_V3_SCALE])["components"]["schemas"]
            self._v3_meta.update({k: v for k, v in scale.items() if k.startswith(_SCALE)})
        return self._v3_meta

    def _v3_docs(self) -> dict[str, bytes]:
        docs: dict[str, bytes] = {
            gv: bytes(raw) for gv, raw in self.snapshot.v3.items() if self._served_builtin(gv)
        }
        custom: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        for crd, version in self._crd_versions():
            gv = _gv_path(crd["spec"]["group"], version["name"])
            paths, schemas = custom.setdefault(gv, ({}, {}))
            _add_custom(crd, version, paths, schemas, v3=True)
        for gv, (paths, schemas) in custom.items():
            doc = {
                "openapi": "3.0.0",
                "info": {"title": "Kubernetes CRD Swagger", "version": "v0.1.0"},
                "paths": paths,
                "components": {"schemas": {**self._meta_schemas(), **schemas}},
            }
            docs[gv] = msgspec.json.encode(doc)
        return docs

    def v3_document(self, gv: str) -> bytes | None:
        """The v3 document of ``gv`` (``apis/apps/v1``), or None when not served."""
        self._v3_cached()
        hit = self._cache.get("v3:" + gv)
        return hit[0] if hit else None

    def v3_index(self) -> bytes:
        """``/openapi/v3``: each group-version's document path, with its hash."""
        return self._v3_cached()

    def _v3_cached(self) -> bytes:
        if "v3" not in self._cache:
            paths = {}
            for gv, body in sorted(self._v3_docs().items()):
                digest = _hash(body)
                self._cache["v3:" + gv] = body, digest
                paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
            self._cache["v3"] = msgspec.json.encode({"paths": paths}), ""
        return self._cache["v3"][0]


# --- custom resources ------------------------------------------------------------------------
def _ref(name: str, v3: bool) -> dict[str, Any]:
    return {"$ref": (_REF_V3 if v3 else _REF_V2) + name}


def _add_custom(
    crd: dict[str, Any],
    version: dict[str, Any],
    paths: dict[str, Any],
    definitions: dict[str, Any],
    *,
    v3: bool,
) -> None:
    spec = crd["spec"]
    names = spec["names"]
    group, ver, kind = spec["group"], version["name"], names["kind"]
    gvk = {"group": group, "kind": kind, "version": ver}
    name = _definition_name(group, ver, kind)
    list_name = _definition_name(group, ver, names.get("listKind") or kind + "List")
    schema = copy.deepcopy((version.get("schema") or {}).get("openAPIV3Schema") or {})
    if not schema:
        schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if not v3:
        schema = _v2_schema(schema)
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"description": _API_VERSION_DESCRIPTION, "type": "string"}
    props["kind"] = {"description": _KIND_DESCRIPTION, "type": "string"}
    meta = _ref(_META + "ObjectMeta", v3)
    props["metadata"] = (
        {"description": _METADATA_DESCRIPTION, "allOf": [meta]}
        if v3
        else {"description": _METADATA_DESCRIPTION, **meta}
    )
    schema["x-kubernetes-group-version-kind"] = [gvk]
    definitions[name] = schema
    definitions[list_name] = {
        "description": f"{kind}List is a list of {kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"description": _API_VERSION_DESCRIPTION, "type": "string"},
            "items": {
                "description": f"List of {names['plural']}. More info: "
                "https://git.k8s.io/community/contributors/devel/api-conventions.md",
                "type": "array",
                "items": _ref(name, v3),
            },
            "kind": {"description": _KIND_DESCRIPTION, "type": "string"},
            "metadata": {"description": _LIST_METADATA_DESCRIPTION, **_ref(_META + "ListMeta", v3)},
        },
        "x-kubernetes-group-version-kind": [
            {**gvk, "kind": names.get("listKind") or kind + "List"}
        ],
    }
    base = f"/apis/{group}/{ver}"
    namespaced = spec.get("scope") == "Namespaced"
    collection = (
        f"{base}/namespaces/{{namespace}}/{names['plural']}"
        if namespaced
        else (f"{base}/{names['plural']}")
    )
    op_kind = kind + "".join(p.capitalize() for p in reversed(group.split(".")))
    tag = "".join(p.capitalize() for p in group.split(".")) + ver.capitalize()
    scope = "Namespaced" if namespaced else ""

    def op(action: str, verb: str, what: str, body: str | None, out: str | None) -> dict[str, Any]:
        o: dict[str, Any] = {
            "tags": [tag.lower()],
            "description": what,
            "operationId": f"{verb}{tag}{scope}{op_kind}",
            "parameters": [],
            "responses": {},
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
        }
        if verb in ("create", "replace", "patch"):
            o["parameters"].append(_query(_FIELD_VALIDATION, v3))
        if v3:
            if body:
                o["requestBody"] = {"content": {m: {"schema": _ref(body, v3)} for m in _MEDIA}}
            if out:
                o["responses"]["200"] = {
                    "description": "OK",
                    "content": {m: {"schema": _ref(out, v3)} for m in _MEDIA},
                }
        else:
            o["consumes"] = (
                ["*/*"]
                if verb != "patch"
                else [
                    "application/json-patch+json",
                    "application/merge-patch+json",
                    "application/apply-patch+yaml",
                ]
            )
            o["produces"] = list(_MEDIA)
            o["schemes"] = ["https"]
            if body:
                o["parameters"].insert(
                    0, {"name": "body", "in": "body", "required": True, "schema": _ref(body, v3)}
                )
            if out:
                o["responses"]["200"] = {"description": "OK", "schema": _ref(out, v3)}
        o["responses"]["401"] = {"description": "Unauthorized"}
        return o

    patch_body = _META + "Patch"
    paths[collection] = {
        "get": op("list", "list", f"list objects of kind {kind}", None, list_name),
        "post": op("post", "create", f"create a {kind}", name, name),
        "delete": op(
            "deletecollection",
            "deletecollection",
            f"delete collection of {kind}",
            None,
            _META + "Status",
        ),
    }
    paths[collection + "/{name}"] = {
        "get": op("get", "read", f"read the specified {kind}", None, name),
        "put": op("put", "replace", f"replace the specified {kind}", name, name),
        "patch": op("patch", "patch", f"partially update the specified {kind}", patch_body, name),
        "delete": op(
            "delete", "delete", f"delete a {kind}", _META + "DeleteOptions", _META + "Status"
        ),
    }
    for sub in ("status", "scale"):
        if sub not in (version.get("subresources") or {}):
            continue
        target = name if sub == "status" else _SCALE
        paths[f"{collection}/{{name}}/{sub}"] = {
            "get": op("get", "read", f"read {sub} of the specified {kind}", None, target),
            "put": op("put", "replace", f"replace {sub} of the specified {kind}", target, target),
            "patch": op(
                "patch",
                "patch",
                f"partially update {sub} of the specified {kind}",
                patch_body,
                target,
            ),
        }
    if namespaced:
        paths[f"{base}/{names['plural']}"] = {
            "get": op("list", "list", f"list objects of kind {kind}", None, list_name)
        }


def _query(name: str, v3: bool) -> dict[str, Any]:
    if v3:
        return {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    return {"uniqueItems": True, "type": "string", "name": name, "in": "query"}
