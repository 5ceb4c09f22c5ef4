"""Pruning, defaulting and validation of custom resources against a CRD schema.

Pure library used by the sandbox apiserver on every write of a custom
resource. It does what apiextensions-apiserver does with a structural
``openAPIV3Schema``, in the same order:

1. prune unknown fields (``pkg/apiserver/schema/pruning``): ``apiVersion``,
   ``kind`` and ``metadata`` are kept at the root and in
   ``x-kubernetes-embedded-resource`` objects, everything below
   ``x-kubernetes-preserve-unknown-fields`` is kept;
2. apply ``default`` values (``pkg/apiserver/schema/defaulting``);
3. validate with the kube-openapi validator and turn its errors into 422
   causes as ``pkg/apiserver/validation.ValidateCustomResource`` does, with the
   same field paths (``spec.tolerations[0].key``) and message texts
   (``spec.suspend in body must be of type boolean: "string"``).

Unknown fields are reported according to ``fieldValidation`` as apiservers
from 1.27 on do (the recorded 1.24 server had the feature off and pruned
silently): ``Strict`` → one cause per field (reason ``FieldValueUnknown``,
message ``unknown field "spec.x"``; the server answers 400 with
:func:`strict_decoding_message`), ``Warn`` → one warning string per field,
``Ignore`` → nothing. The returned object has its map keys sorted at every
level, as Go's encoding of an unstructured object has.

Left out: CEL rules (``x-kubernetes-validations``), ``x-kubernetes-list-type``
uniqueness, ``uniqueItems``, OpenAPI ``$ref``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from fleet.errors import InputError
from fleet.machinery import go_quote

__all__ = [
    "Cause",
    "invalid_message",
    "strict_decoding_message",
    "validate_custom_resource",
]

FIELD_VALIDATION_VALUES = ("", "Ignore", "Strict", "Warn")
"""What ``?fieldValidation=`` accepts ("" means the server default)."""


@dataclass(frozen=True, slots=True)
class Cause:
    """One entry of a 422 Status ``details.causes``: ``{reason, message, field}``."""

    field: str
    reason: str
    message: str

    def to_dict(self) -> dict[str, str]:
        """The cause as the apiserver serialises it (this key order)."""
        return {"reason": self.reason, "message": self.message, "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


# --- Go formatting ---------------------------------------------------------------


def _go_num(v: float | int) -> str:
    """Go's ``%v`` of an int64 or float64."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e21:
        return str(int(v))
    r = repr(v)
    if "e" in r:
        mant, exp = r.split("e")
        sign = "-" if exp.startswith("-") else "+"
        return f"{mant}e{sign}{abs(int(exp)):02d}"
    return r


def _body_value(v: Any) -> str:
    """``field.Error.ErrorBody`` rendering of the bad value."""
    if v is None:
        return "null"
    if isinstance(v, str):
        return go_quote(v)
    if isinstance(v, (bool, int, float)):
        return _go_num(v)
    return repr(v)


def _invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(path, "FieldValueInvalid", f"Invalid value: {_body_value(value)}: {detail}")


def _type_invalid(path: str, value: Any, detail: str) -> Cause:
    return Cause(path, "FieldValueTypeInvalid", f"Invalid value: {_body_value(value)}: {detail}")


# --- JSON types as the validator names them ----------------------------------------


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "object"


def _schema_types(schema: dict[str, Any]) -> list[str]:
    if schema.get("x-kubernetes-int-or-string"):
        return ["integer", "string"]
    t = schema.get("type")
    if isinstance(t, list):
        return [str(x) for x in t]
    return [str(t)] if t else []


# --- pruning -------------------------------------------------------------------------


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _prune(
    value: Any, schema: dict[str, Any] | None, path: str, unknown: list[str], *, root: bool = False
) -> Any:
    if schema is None:
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        keep_meta = root or bool(schema.get("x-kubernetes-embedded-resource"))
        out: dict[str, Any] = {}
        for k, v in value.items():
            if keep_meta and k in ("apiVersion", "kind", "metadata"):
                if k == "metadata" and root:
                    out[k] = v  # ObjectMeta is the server's business
                else:
                    out[k] = _prune(v, props.get(k), _child(path, k), unknown) if k in props else v
            elif k in props:
                out[k] = _prune(v, props[k], _child(path, k), unknown)
            elif isinstance(additional, dict):
                out[k] = _prune(v, additional, _child(path, k), unknown)
            elif preserve or additional is True:
                out[k] = v
            else:
                unknown.append(_child(path, k))
        return out
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            return [_prune(v, items, f"{path}[{i}]", unknown) for i, v in enumerate(value)]
    return value


# --- defaulting ----------------------------------------------------------------------


def _default(value: Any, schema: dict[str, Any] | None) -> Any:
    if schema is None:
        return value
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for k in sorted(props):
            sub = props[k]
            if not isinstance(sub, dict) or "default" not in sub:
                continue
            if k not in value or (value[k] is None and not sub.get("nullable")):
                value[k] = copy.deepcopy(sub["default"])
        for k, v in list(value.items()):
            if k in props:
                value[k] = _default(v, props[k])
            elif isinstance(schema.get("additionalProperties"), dict):
                value[k] = _default(v, schema["additionalProperties"])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_default(v, schema["items"]) for v in value]
    return value


# --- validation ----------------------------------------------------------------------


class _Result:
    __slots__ = ("causes", "matches")

    def __init__(self) -> None:
        self.causes: list[Cause] = []
        self.matches = 0


_DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-](\d{2}):(\d{2}))$"
)
_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)
_HOSTNAME = re.compile(
    r"^[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*$"
)
_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}([0-9A-Fa-f]{2})$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def _is_date_time(s: str) -> bool:
    m = _DATE_TIME.match(s)
    if not m:
        return False
    try:
        date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return False
    return int(m[4]) < 24 and int(m[5]) < 60 and int(m[6]) < 61


def _is_date(s: str) -> bool:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
        return False
    try:
        date.fromisoformat(s)
    except ValueError:
        return False
    return True


def _is_byte(s: str) -> bool:
    try:
        base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _is_ip(s: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(s).version == version
    except ValueError:
        return False


def _is_cidr(s: str) -> bool:
    try:
        ipaddress.ip_network(s, strict=False)
    except ValueError:
        return False
    return "/" in s


_FORMATS: dict[str, Callable[[str], bool]] = {
    "date-time": _is_date_time,
    "datetime": _is_date_time,
    "date": _is_date,
    "byte": _is_byte,
    "uuid": lambda s: bool(_UUID.match(s)),
    "uuid3": lambda s: bool(_UUID.match(s)),
    "uuid4": lambda s: bool(_UUID.match(s)),
    "uuid5": lambda s: bool(_UUID.match(s)),
    "ipv4": lambda s: _is_ip(s, 4),
    "ipv6": lambda s: _is_ip(s, 6),
    "cidr": _is_cidr,
    "mac": lambda s: bool(_MAC.match(s)),
    "hostname": lambda s: len(s) <= 255 and bool(_HOSTNAME.match(s)),
    "email": lambda s: bool(_EMAIL.match(s)),
}


def _num_eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _validate(value: Any, schema: dict[str, Any], path: str, res: _Result) -> None:
    name = path
    types = _schema_types(schema)
    nullable = bool(schema.get("nullable"))
    if value is None and nullable:
        return
    # typeValidator
    if types or schema.get("format"):
        res.matches += 1
        if value is None:
            if types and "null" not in types:
                res.causes.append(
                    _type_invalid(
                        path, "null", f'{name} in body must be of type {",".join(types)}: "null"'
                    )
                )
        else:
            have = _json_type(value)
            float_int = have == "number" and float(value).is_integer() and "integer" in types
            int_float = have == "integer" and "number" in types
            string_format = (
                isinstance(value, str)
                and schema.get("format")
                and "number" not in types
                and "integer" not in types
            )
            if types and not string_format and not (have in types or float_int or int_float):
                res.causes.append(
                    _type_invalid(
                        path,
                        have,
                        f"{name} in body must be of type {','.join(types)}: {go_quote(have)}",
                    )
                )
    # schemaPropsValidator: allOf, oneOf, anyOf, not
    _validate_composition(value, schema, path, res)
    if isinstance(value, str):
        _validate_string(value, schema, path, res)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _validate_number(value, schema, path, res)
    if isinstance(value, list):
        _validate_slice(value, schema, path, res)
    enum = schema.get("enum")
    if isinstance(enum, list) and value is not None:
        res.matches += 1
        if not any(_num_eq(value, e) for e in enum):
            supported = ", ".join(
                go_quote(e) if isinstance(e, str) else _json_dumps(e) for e in enum
            )
            shown = (
                _body_value(value)
                if isinstance(value, (str, int, float, bool))
                else _json_dumps(value)
            )
            res.causes.append(
                Cause(
                    path,
                    "FieldValueNotSupported",
                    f"Unsupported value: {shown}: supported values: {supported}",
                )
            )
    if isinstance(value, dict):
        _validate_object(value, schema, path, res)


def _json_dumps(v: Any) -> str:
    return json.dumps(v, separators=(",", ":"), sort_keys=True)


def _validate_composition(value: Any, schema: dict[str, Any], path: str, res: _Result) -> None:
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        failed = False
        for sub in all_of:
            r = _sub(value, sub, path)
            res.causes.extend(r.causes)
            failed = failed or bool(r.causes)
        if failed:
            res.causes.append(
                _invalid("<nil>", "", f"{go_quote(path)} must validate all the schemas (allOf)")
            )
    one_of = schema.get("oneOf")
    if isinstance(one_of, list) and one_of:
        results = [_sub(value, sub, path) for sub in one_of]
        valid = sum(1 for r in results if not r.causes)
        if valid != 1:
            extra = "Found none valid" if valid == 0 else f"Found {valid} valid alternatives"
            res.causes.append(
                _invalid(
                    "<nil>",
                    "",
                    f"{go_quote(path)} must validate one and only one schema (oneOf). {extra}",
                )
            )
            if valid == 0:
                best = max(results, key=lambda r: r.matches)
                res.causes.extend(best.causes)
    any_of = schema.get("anyOf")
    if isinstance(any_of, list) and any_of:
        best_failures: _Result | None = None
        succeeded = False
        for sub in any_of:
            r = _sub(value, sub, path)
            if not r.causes:
                succeeded = True
                best_failures = None
                break
            if best_failures is None or r.matches > best_failures.matches:
                best_failures = r
        if not succeeded:
            res.causes.append(
                _invalid("<nil>", "", f"{go_quote(path)} must validate at least one schema (anyOf)")
            )
        if best_failures is not None:
            res.causes.extend(best_failures.causes)
    not_schema = schema.get("not")
    if isinstance(not_schema, dict):
        if not _sub(value, not_schema, path).causes:
            res.causes.append(
                _invalid("<nil>", "", f"{go_quote(path)} must not validate the schema (not)")
            )


def _sub(value: Any, schema: Any, path: str) -> _Result:
    r = _Result()
    if isinstance(schema, dict):
        _validate(value, schema, path, r)
    return r


def _validate_string(value: str, schema: dict[str, Any], path: str, res: _Result) -> None:
    n = len(value)
    max_length = schema.get("maxLength")
    if isinstance(max_length, int):
        res.matches += 1
        if n > max_length:
            unit = "byte" if max_length == 1 else "bytes"
            res.causes.append(
                Cause(
                    path, "FieldValueTooLong", f"Too long: may not be more than {max_length} {unit}"
                )
            )
    min_length = schema.get("minLength")
    if isinstance(min_length, int):
        res.matches += 1
        if n < min_length:
            res.causes.append(
                _invalid(path, value, f"{path} in body should be at least {min_length} chars long")
            )
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        res.matches += 1
        try:
            ok = re.search(pattern, value) is not None
        except re.error:
            ok = True  # the CRD was admitted with it; Go's RE2 syntax differs in corners
        if not ok:
            res.causes.append(_invalid(path, value, f"{path} in body should match '{pattern}'"))
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        res.matches += 1
        if not _FORMATS[fmt](value):
            res.causes.append(
                _type_invalid(
                    path, value, f"{path} in body must be of type {fmt}: {go_quote(value)}"
                )
            )


def _validate_number(value: float, schema: dict[str, Any], path: str, res: _Result) -> None:
    multiple = schema.get("multipleOf")
    if isinstance(multiple, (int, float)) and multiple:
        res.matches += 1
        q = value / multiple
        if not float(q).is_integer():
            res.causes.append(
                _invalid(path, value, f"{path} in body should be a multiple of {_go_num(multiple)}")
            )
    maximum = schema.get("maximum")
    if isinstance(maximum, (int, float)):
        res.matches += 1
        if schema.get("exclusiveMaximum") and value >= maximum:
            res.causes.append(
                _invalid(
                    path, value, f"{path} in body should be less than {_go_num(float(maximum))}"
                )
            )
        elif value > maximum:
            res.causes.append(
                _invalid(
                    path,
                    value,
                    f"{path} in body should be less than or equal to {_go_num(float(maximum))}",
                )
            )
    minimum = schema.get("minimum")
    if isinstance(minimum, (int, float)):
        res.matches += 1
        if schema.get("exclusiveMinimum") and value <= minimum:
            res.causes.append(
                _invalid(
                    path, value, f"{path} in body should be greater than {_go_num(float(minimum))}"
                )
            )
        elif value < minimum:
            res.causes.append(
                _invalid(
                    path,
                    value,
                    f"{path} in body should be greater than or equal to {_go_num(float(minimum))}",
                )
            )


def _validate_slice(value: list[Any], schema: dict[str, Any], path: str, res: _Result) -> None:
    max_items = schema.get("maxItems")
    if isinstance(max_items, int):
        res.matches += 1
        if len(value) > max_items:
            res.causes.append(
                Cause(
                    path,
                    "FieldValueTooMany",
                    f"Too many: {len(value)}: must have at most {max_items} items",
                )
            )
    min_items = schema.get("minItems")
    if isinstance(min_items, int):
        res.matches += 1
        if len(value) < min_items:
            res.causes.append(
                _invalid(path, len(value), f"{path} in body should have at least {min_items} items")
            )
    items = schema.get("items")
    if isinstance(items, dict):
        for i, v in enumerate(value):
            _validate(v, items, f"{path}[{i}]", res)


def _validate_object(
    value: dict[str, Any], schema: dict[str, Any], path: str, res: _Result
) -> None:
    max_props = schema.get("maxProperties")
    if isinstance(max_props, int):
        res.matches += 1
        if len(value) > max_props:
            res.causes.append(
                Cause(
                    path,
                    "FieldValueTooMany",
                    f"Too many: {len(value)}: must have at most {max_props} items",
                )
            )
    min_props = schema.get("minProperties")
    if isinstance(min_props, int):
        res.matches += 1
        if len(value) < min_props:
            res.causes.append(
                _invalid(
                    path, len(value), f"{path} in body should have at least {min_props} properties"
                )
            )
    for k in schema.get("required") or []:
        res.matches += 1
        if k not in value:
            res.causes.append(Cause(_child(path, str(k)), "FieldValueRequired", "Required value"))
    props = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    for k in sorted(value):
        if not path and k == "metadata":
            continue  # ObjectMeta is validated by the server, not the schema
        sub = props.get(k)
        if sub is None and isinstance(additional, dict):
            sub = additional
        if isinstance(sub, dict):
            _validate(value[k], sub, _child(path, k), res)


# --- public API ----------------------------------------------------------------------


def _sorted_keys(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _sorted_keys(v[k]) for k in sorted(v)}
    if isinstance(v, list):
        return [_sorted_keys(x) for x in v]
    return v


def validate_custom_resource(
    obj: dict[str, Any], schema: dict[str, Any], *, field_validation: str = "Ignore"
) -> tuple[dict[str, Any], list[Cause], list[str]]:
    """Prune, default and validate a custom resource against its ``openAPIV3Schema``.

    Returns ``(object, causes, warnings)``: the pruned and defaulted object (a
    new dict, keys sorted), the 422 causes of schema violations followed by —
    with ``field_validation="Strict"`` — one ``FieldValueUnknown`` cause per
    pruned field, and — with ``"Warn"`` — one warning text per pruned field.
    An unsupported ``field_validation`` raises :class:`InputError` with the
    apiserver's text.
    """
    if field_validation not in FIELD_VALIDATION_VALUES:
        raise InputError(
            f"fieldValidation: Unsupported value: {go_quote(field_validation)}: supported values: "
            + ", ".join(go_quote(v) for v in FIELD_VALIDATION_VALUES)
        )
    unknown: list[str] = []
    pruned = _prune(copy.deepcopy(obj), schema, "", unknown, root=True)
    defaulted = _sorted_keys(_default(pruned, schema))
    res = _Result()
    _validate(defaulted, schema, "", res)
    causes = list(res.causes)
    warnings: list[str] = []
    unknown.sort()
    if field_validation == "Strict":
        causes.extend(
            Cause(p, "FieldValueUnknown", f"unknown field {go_quote(p)}") for p in unknown
        )
    elif field_validation == "Warn":
        warnings = [f"unknown field {go_quote(p)}" for p in unknown]
    return defaulted, causes, warnings


def invalid_message(kind_group: str, name: str, causes: Iterable[Cause]) -> str:
    """The 422 Status message: ``Kind.group "name" is invalid: field: message``.

    Several causes are joined as a Go aggregate (``[a, b]``, duplicates once).
    """
    seen: set[str] = set()
    parts: list[str] = []
    for c in causes:
        text = str(c)
        if text not in seen:
            seen.add(text)
            parts.append(text)
    body = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return f"{kind_group} {go_quote(name)} is invalid: {body}"


def strict_decoding_message(kind: str, version: str, causes: Iterable[Cause]) -> str:
    """The 400 message for ``fieldValidation=Strict`` with unknown fields.

    ``Node in version "v1alpha1" cannot be handled as a Node: strict decoding
    error: unknown field "spec.x", unknown field "y"``; only the
    ``FieldValueUnknown`` causes count.
    """
    unknown = [c.message for c in causes if c.reason == "FieldValueUnknown"]
    return (
        f"{kind} in version {go_quote(version)} cannot be handled as a {kind}: "
        f"strict decoding error: {', '.join(unknown)}"
    )
