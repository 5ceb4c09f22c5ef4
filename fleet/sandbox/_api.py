"""The apiserver's verbs on stored objects: get, create, update, patch, and the write path.

:class:`Api` is the sandbox without HTTP: the ASGI layer (``_asgi``) parses
a request into a :class:`Call` and calls one method here. Lists and watches
live in ``_lists`` and ``_watch``, deletion and garbage collection in
``_deletion``, CRDs in ``_crds``, subresources in ``_subresources``.

Unknown fields of built-in kinds are dropped, warned about or refused on the way in
(``_known_fields``, by ``fieldValidation``) as kube-apiserver's strict decoding does.

Every write goes through :meth:`Api.write`: status subresource separation,
defaulting, validation (built-in rules or the CRD schema), generation bumps,
no-op detection, finalizer-driven removal, then one ``Store.commit``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import yaml

from fleet.machinery import (
    APPLY_PATCH,
    JSON,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    YAML,
    go_quote,
)
from fleet.sandbox import _builtins, _cluster_kinds, _libs, _objects
from fleet.sandbox._known_fields import known_fields
from fleet.sandbox._objects import ordered, rfc3339
from fleet.sandbox._registry import Registry, ResourceType
from fleet.sandbox._settings import SandboxSettings
from fleet.sandbox._status import (
    StatusError,
    already_exists,
    bad_request,
    cause,
    field_invalid,
    forbidden,
    internal_error,
    invalid,
    not_found,
    stale,
)
from fleet.sandbox._store import Key, Store, clone

_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()
FIELD_VALIDATION_VALUES = ("", "Ignore", "Strict", "Warn")
GENERATE_NAME_ATTEMPTS = 8
"""Names drawn for a ``generateName`` before a clash is answered 409 (kube-apiserver's 7 retries)."""


@dataclass
class Call:
    """One parsed request against a resource."""

    rt: ResourceType
    namespace: str | None
    name: str | None = None
    subresource: str | None = None
    query: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    content_type: str = JSON
    warnings: list[str] = field(default_factory=list)

    @property
    def dry_run(self) -> bool:
        return self.query.get("dryRun", "") == "All"

    def ns(self) -> str:
        return self.namespace or ""


def decode_body(rt: ResourceType, body: bytes, content_type: str) -> dict[str, Any]:
    """The request body as an object; 400 as the apiserver words it when it is not one."""
    try:
        if content_type in (YAML, APPLY_PATCH):
            obj = yaml.safe_load(body.decode("utf-8"))
        else:
            obj = _decoder.decode(body)
    except (msgspec.DecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        head = body[:27].decode("utf-8", "replace")
        more = " ..." if len(body) > 27 else ""
        raise bad_request(
            f"the object provided is unrecognized (must be of type {rt.kind}): couldn't get version/kind; "
            f"json parse error: unexpected end of JSON input ({head}{more})"
        ) from exc
    if not isinstance(obj, dict):
        raise bad_request(
            f"the object provided is unrecognized (must be of type {rt.kind}): couldn't get version/kind; "
            "json parse error: json: cannot unmarshal array into Go value of type struct"
        )
    return obj


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("resourceVersion", None)
    meta.pop("managedFields", None)
    out["metadata"] = meta
    return out


def _strict_decoding_error(unknown: list[str]) -> str:
    return "strict decoding error: " + ", ".join(f"unknown field {go_quote(p)}" for p in unknown)


def go_map_text(v: Any) -> str:
    """Go's ``%+v`` of a decoded JSON value (``map[k:v ...]`` with sorted keys, ``[a b]``)."""
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_map_text(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(go_map_text(x) for x in v) + "]"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _apply_path(body: Any, path: str) -> str:
    """A structured-merge-diff path (``.spec.containers[name="c"].bar``) of a strict path."""
    out, node = "", body
    for part in path.replace("[", ".[").split("."):
        if part.startswith("["):
            i = int(part[1:-1])
            node = node[i] if isinstance(node, list) and i < len(node) else None
            name = node.get("name") if isinstance(node, dict) else None
            out += f"[name={go_quote(name)}]" if isinstance(name, str) else part
        else:
            node = node.get(part) if isinstance(node, dict) else None
            out += "." + part
    return out


class Api:
    """The sandbox apiserver's object semantics over a :class:`Store`."""

    def __init__(self, settings: SandboxSettings, store: Store, registry: Registry) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.now: Callable[[], float] = settings.wall_clock
        # Hooks run after an object of a type is created or removed (CRDs, namespaces).
        self.after_create: dict[Key, Callable[[dict[str, Any]], None]] = {}
        self.after_delete: dict[Key, Callable[[dict[str, Any]], None]] = {}
        # Hooks that fill allocated fields before validation: (old or None, new) -> None.
        self.before_write: dict[Key, Callable[[dict[str, Any] | None, dict[str, Any]], None]] = {}

    # --- reads -----------------------------------------------------------------------------
    def lookup(self, rt: ResourceType, ns: str, name: str) -> dict[str, Any]:
        obj = self.store.get(rt.key, ns, name)
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        return obj

    def namespace_state(self, ns: str) -> dict[str, Any] | None:
        return self.store.get(("", "namespaces"), "", ns)

    # --- options ------------------------------------------------------------------------------
    def field_validation(self, call: Call, options_kind: str) -> str:
        fv = call.query.get("fieldValidation", "")
        if fv not in FIELD_VALIDATION_VALUES:
            supported = ", ".join(f'"{v}"' for v in FIELD_VALIDATION_VALUES)
            c = cause(
                "FieldValueNotSupported",
                "fieldValidation",
                f'Unsupported value: "{fv}": supported values: {supported}',
            )
            raise StatusError(
                422,
                "Invalid",
                f'{options_kind}.meta.k8s.io "" is invalid: fieldValidation: {c["message"]}',
                {"group": "meta.k8s.io", "kind": options_kind, "causes": [c]},
            )
        if fv == "":
            # Warn is the default from 1.27 on (the v1.24 transcripts predate server-side
            # field validation and pruned silently).
            return "Warn"
        return fv

    def _decode_unknown(self, call: Call, obj: dict[str, Any], fv: str) -> None:
        """A create or update body's unknown fields: dropped, warned about, or a 400."""
        rt = call.rt
        if rt.is_custom:
            return
        unknown = known_fields().drop_unknown(rt.group, rt.version, rt.kind, obj)
        if not unknown:
            return
        if fv == "Strict":
            raise bad_request(
                f"{rt.kind} in version {go_quote(rt.version)} cannot be handled as a {rt.kind}: "
                + _strict_decoding_error(unknown)
            )
        if fv == "Warn":
            call.warnings.extend(f"unknown field {go_quote(p)}" for p in unknown)

    def _patch_unknown(self, call: Call, current: dict[str, Any], fv: str) -> bytes:
        """A merge or strategic merge patch with its unknown fields dropped (the patch of a
        clean object adds exactly those), warned about, or refused as kube-apiserver refuses
        them after patching (422 on the ``patch`` field)."""
        from fleet.sandbox._patching import apply_patch

        rt = call.rt
        smp = call.content_type == STRATEGIC_MERGE_PATCH
        try:
            patch = _decoder.decode(call.body)
        except msgspec.DecodeError:
            return call.body  # apply_patch answers a malformed body
        unknown = known_fields().drop_unknown(rt.group, rt.version, rt.kind, patch, smp=smp)
        if not unknown:
            return call.body
        if fv == "Strict":
            if smp:
                shown = go_map_text(_decoder.decode(call.body))
            else:
                patched = apply_patch(rt, clone(current), call.body, call.content_type)
                shown = _encoder.encode(patched).decode()
            self._refuse_patch(shown, unknown)
        if fv == "Warn":
            call.warnings.extend(f"unknown field {go_quote(p)}" for p in unknown)
        return _encoder.encode(patch)

    @staticmethod
    def _refuse_patch(shown: str, unknown: list[str]) -> None:
        text = f"Invalid value: {go_quote(shown)}: {_strict_decoding_error(unknown)}"
        raise StatusError(
            422,
            "Invalid",
            f' "" is invalid: patch: {text}',
            {"causes": [cause("FieldValueInvalid", "patch", text)]},
        )

    def _apply_unknown(self, call: Call) -> None:
        """Server-side apply builds a typed object from the body, whatever ``fieldValidation``
        says: an unknown field is kube-apiserver's 500 from structured-merge-diff."""
        rt = call.rt
        if rt.is_custom:
            return
        body = decode_body(rt, call.body, APPLY_PATCH)
        probe = clone(body)
        unknown = known_fields().drop_unknown(rt.group, rt.version, rt.kind, probe)
        if not unknown:
            return
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            meta = {}
        errors = [f"{_apply_path(body, p)}: field not declared in schema" for p in unknown]
        text = (
            errors[0] if len(errors) == 1 else "\n".join(["errors:"] + ["  " + e for e in errors])
        )
        group_version = rt.api_version if rt.group else f"/{rt.version}"
        raise internal_error(
            f"failed to create typed patch object ({meta.get('namespace') or ''}/"
            f"{meta.get('name') or ''}; {group_version}, Kind={rt.kind}): {text}"
        )

    # --- object preparation ------------------------------------------------------------
    def _check_type(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if kind is None or kind == "":
            obj["kind"] = rt.kind
        if api_version is None or api_version == "":
            obj["apiVersion"] = rt.api_version
        if obj["kind"] != rt.kind:
            name = (obj.get("metadata") or {}).get("name", "")
            if rt.is_custom:
                raise invalid(
                    obj["kind"],
                    rt.group,
                    name,
                    [field_invalid("kind", obj["kind"], f"must be {rt.kind}")],
                )
            raise bad_request(
                f"the object provided is unrecognized (must be of type {rt.kind}): "
                f'{obj["kind"]} in version "{rt.version}" cannot be handled as a {rt.kind}'
            )
        obj["apiVersion"] = rt.api_version
        if not isinstance(obj.get("metadata"), dict):
            obj["metadata"] = {}

    def _validate(
        self, rt: ResourceType, obj: dict[str, Any], fv: str, call: Call
    ) -> dict[str, Any]:
        """Schema (custom resources) or built-in validation; returns the object to store."""
        name = obj["metadata"].get("name", "")
        meta_causes = _builtins.validate_metadata(obj)
        if rt.is_custom:
            schema = ((rt.crd or {}).get("schema") or {}).get("openAPIV3Schema") or {}
            pruned, causes, warnings = _libs.validate_custom_resource(
                obj, schema, field_validation=fv
            )
            call.warnings.extend(warnings)
            if any(c.reason == "FieldValueUnknown" for c in causes):
                raise bad_request(_libs.strict_decoding_message(rt.kind, rt.version, causes))
            if causes or meta_causes:
                raise invalid(
                    rt.kind,
                    rt.group,
                    name,
                    meta_causes
                    + [
                        {"reason": c.reason, "message": c.message, "field": c.field} for c in causes
                    ],
                )
            return pruned
        _builtins.raise_if(meta_causes + _builtins.validate(rt, obj), rt, name)
        return obj

    # --- create ----------------------------------------------------------------------------
    def create(self, call: Call, obj: dict[str, Any] | None = None) -> dict[str, Any]:
        rt = call.rt
        fv = self.field_validation(call, "CreateOptions")
        if obj is None:
            obj = decode_body(rt, call.body, call.content_type)
            self._decode_unknown(call, obj, fv)
        self._check_type(rt, obj)
        _builtins.check_decodable(rt, obj)
        meta = obj["metadata"]
        ns = call.ns()
        if rt.namespaced:
            body_ns = meta.get("namespace") or ""
            if body_ns and body_ns != ns:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise invalid(
                    rt.kind,
                    rt.group,
                    "",
                    [
                        cause(
                            "FieldValueRequired",
                            "metadata.name",
                            "Required value: name or generateName is required",
                        )
                    ],
                )
            # RetryGenerateName (GA in 1.32): a generated name already taken is drawn again,
            # so 5,000 pods of one DaemonSet do not collide (27^5 suffixes).
            for _ in range(GENERATE_NAME_ATTEMPTS):
                meta["name"] = _objects.generated_name(str(prefix))
                if self.store.get(rt.key, ns, meta["name"]) is None:
                    break
        name = str(meta["name"])
        _builtins.raise_if(_builtins.validate_name(rt, name), rt, name)
        if rt.namespaced:
            nso = self.namespace_state(ns)
            if nso is None:
                raise not_found("namespaces", "", ns)
            if (nso.get("metadata") or {}).get("deletionTimestamp"):
                raise forbidden(
                    rt.plural,
                    rt.group,
                    name,
                    f"unable to create new content in namespace {ns} because it is being terminated",
                )
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(k, None)
        meta["uid"] = _objects.new_uid()
        meta["creationTimestamp"] = rfc3339(self.now())
        if rt.has_generation or rt.is_custom:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        _builtins.initial_status(rt, obj)
        if not rt.is_custom:
            _builtins.default(rt, obj, creating=True)
        allocate = self.before_write.get(rt.key)
        if allocate is not None:
            allocate(None, obj)
        obj = self._validate(rt, obj, fv, call)
        if self.store.get(rt.key, ns, name) is not None:
            raise already_exists(rt.plural, rt.group, name)
        obj = ordered(obj)
        if call.dry_run:
            return obj
        stored = self.store.commit(rt.key, "ADDED", obj, None)
        hook = self.after_create.get(rt.key)
        if hook is not None:
            hook(stored)
        return stored

    # --- update ----------------------------------------------------------------------------
    def update(self, call: Call) -> dict[str, Any]:
        rt = call.rt
        assert call.name is not None
        fv = self.field_validation(call, "UpdateOptions")
        new = decode_body(rt, call.body, call.content_type)
        self._decode_unknown(call, new, fv)
        self._check_type(rt, new)
        _builtins.check_decodable(rt, new)
        meta = new["metadata"]
        body_name = meta.get("name")
        if body_name and body_name != call.name:
            raise bad_request(
                f"the name of the object ({body_name}) does not match the name on the URL ({call.name})"
            )
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != call.ns():
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        old = self.lookup(rt, call.ns(), call.name)
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise stale(rt.plural, rt.group, call.name)
        return self.write(call, old, new, fv)

    def write(
        self, call: Call, old: dict[str, Any], new: dict[str, Any], fv: str = "Strict"
    ) -> dict[str, Any]:
        """Store ``new`` as the next state of ``old`` (update and patch end here)."""
        rt = call.rt
        new = self._merge_subresource(rt, call.subresource, old, new)
        meta = new["metadata"]
        ometa = old["metadata"]
        for k in (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ):
            if k in ometa:
                meta[k] = ometa[k]
            else:
                meta.pop(k, None)
        meta["resourceVersion"] = ometa["resourceVersion"]
        new["kind"], new["apiVersion"] = rt.kind, rt.api_version
        if not rt.is_custom:
            _builtins.default(rt, new, creating=False)
        allocate = self.before_write.get(rt.key)
        if allocate is not None and call.subresource is None:
            allocate(old, new)
        if _builtins.micro_time_causes(rt, new) is not None:
            raise StatusError(
                422,
                "Invalid",
                f' "" is invalid: patch: Invalid value: "{call.name}": '
                f"{_builtins.micro_time_causes(rt, new)}",
                {"causes": [cause("FieldValueInvalid", "patch", "Invalid value")]},
            )
        new = self._validate(rt, new, fv, call)
        meta = new["metadata"]
        _builtins.raise_if(_builtins.validate_update(rt, old, new), rt, meta.get("name", ""))
        if (rt.has_generation or rt.is_custom) and _spec_part(new) != _spec_part(old):
            meta["generation"] = int(ometa.get("generation") or 0) + 1
        new = ordered(new)
        gone = (
            bool(meta.get("deletionTimestamp"))
            and not meta.get("finalizers")
            and not meta.get("deletionGracePeriodSeconds")
        )
        if _comparable(new) == _comparable(old) and not gone:
            return old
        if call.dry_run:
            return new
        if gone:
            self.remove(rt, new, old)
            # The answer is the last state, as it was before the removal.
            last = dict(new)
            last["metadata"] = dict(new["metadata"], resourceVersion=ometa["resourceVersion"])
            return last
        return self.store.commit(rt.key, "MODIFIED", new, old)

    def _merge_subresource(
        self, rt: ResourceType, sub: str | None, old: dict[str, Any], new: dict[str, Any]
    ) -> dict[str, Any]:
        if not rt.has_status():
            return new
        if sub == "approval":
            return _cluster_kinds.approval(old, new)
        if sub == "status":
            merged: dict[str, Any] = clone(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            if rt.status_keeps_meta:
                for k in ("labels", "annotations"):
                    if k in new["metadata"]:
                        merged["metadata"][k] = new["metadata"][k]
                    else:
                        merged["metadata"].pop(k, None)
            return merged
        if "status" in old:
            new["status"] = old["status"]
        else:
            new.pop("status", None)
        return new

    def remove(
        self, rt: ResourceType, final: dict[str, Any], prev: dict[str, Any]
    ) -> dict[str, Any]:
        """Remove an object for good (DELETED event carrying its last state)."""
        stored = self.store.commit(rt.key, "DELETED", final, prev)
        hook = self.after_delete.get(rt.key)
        if hook is not None:
            hook(stored)
        return stored

    # --- patch ---------------------------------------------------------------------------------
    def patch(self, call: Call) -> dict[str, Any]:
        from fleet.sandbox._patching import apply_patch

        rt = call.rt
        assert call.name is not None
        fv = self.field_validation(call, "PatchOptions")
        if call.content_type == APPLY_PATCH:
            self._apply_unknown(call)
        current = self.store.get(rt.key, call.ns(), call.name)
        if current is None:
            if call.content_type == APPLY_PATCH:
                applied = decode_body(rt, call.body, APPLY_PATCH)
                return self.create(call, applied)
            raise not_found(rt.plural, rt.group, call.name)
        body = call.body
        if not rt.is_custom and call.content_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
            body = self._patch_unknown(call, current, fv)
        patched = apply_patch(rt, clone(current), body, call.content_type)
        if not rt.is_custom and call.content_type == JSON_PATCH:
            unknown = known_fields().drop_unknown(rt.group, rt.version, rt.kind, patched)
            if unknown and fv == "Strict":
                self._refuse_patch(_encoder.encode(patched).decode(), unknown)
            if unknown and fv == "Warn":
                call.warnings.extend(f"unknown field {go_quote(p)}" for p in unknown)
        if not isinstance(patched.get("metadata"), dict):
            patched["metadata"] = {}
        rv = patched["metadata"].get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise stale(rt.plural, rt.group, call.name)
        return self.write(call, current, patched, fv)
