"""The OpenAPI v2 document as protobuf: what kubectl asks ``/openapi/v2`` for.

kubectl and client-go fetch ``/openapi/v2`` with
``Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`` and decode
gnostic's ``openapi.v2.Document`` (github.com/google/gnostic ``openapiv2/OpenAPIv2.proto``).
This is a small writer of that message from the JSON document: the parts Kubernetes'
documents use (info, paths with their operations, parameters and responses, definitions,
security). Vendor extensions and ``default``/``enum``/``example`` values are gnostic ``Any``
messages holding YAML text, as kube-apiserver writes them.

Protobuf merges a repeated embedded message field across occurrences, so two encoded
documents concatenated decode as one document with both sets of paths and definitions: the
sandbox encodes the built-in part once and appends each custom resource's part.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import yaml

__all__ = ["encode_document"]

_VARINT, _I64, _LEN = 0, 1, 2


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """YAML as Go's yaml.v2 writes it where kubectl could tell: ``""`` for the empty string."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"' if data == "" else None)


_Dumper.add_representer(str, _represent_str)


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _bytes(number: int, data: bytes) -> bytes:
    return _tag(number, _LEN) + _varint(len(data)) + data


def _str(number: int, value: Any) -> bytes:
    return _bytes(number, str(value).encode()) if value not in (None, "") else b""


def _strs(number: int, values: Any) -> bytes:
    return b"".join(_bytes(number, str(v).encode()) for v in values or ())


def _bool(number: int, value: Any) -> bytes:
    return _tag(number, _VARINT) + b"\x01" if value else b""


def _int(number: int, value: Any) -> bytes:
    return _tag(number, _VARINT) + _varint(int(value)) if value else b""


def _double(number: int, value: Any) -> bytes:
    return _tag(number, _I64) + struct.pack("<d", float(value)) if value else b""


def _any(number: int, value: Any) -> bytes:
    # gnostic Any: value = 1 (google.protobuf.Any, unused), yaml = 2.
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=False, width=1 << 30)
    return _bytes(number, _str(2, text.removesuffix("...\n")))


def _vendor(number: int, obj: dict[str, Any]) -> bytes:
    # NamedAny: name = 1, value = 2.
    return b"".join(
        _bytes(number, _str(1, k) + _any(2, v)) for k, v in obj.items() if k.startswith("x-")
    )


def _named(number: int, items: dict[str, Any], encode: Callable[[Any], bytes]) -> bytes:
    return b"".join(_bytes(number, _str(1, k) + _bytes(2, encode(v))) for k, v in items.items())


def _schema(s: dict[str, Any]) -> bytes:
    out = [
        _str(1, s.get("$ref")),
        _str(2, s.get("format")),
        _str(3, s.get("title")),
        _str(4, s.get("description")),
        _any(5, s["default"]) if "default" in s else b"",
        _double(6, s.get("multipleOf")),
        _double(7, s.get("maximum")),
        _bool(8, s.get("exclusiveMaximum")),
        _double(9, s.get("minimum")),
        _bool(10, s.get("exclusiveMinimum")),
        _int(11, s.get("maxLength")),
        _int(12, s.get("minLength")),
        _str(13, s.get("pattern")),
        _int(14, s.get("maxItems")),
        _int(15, s.get("minItems")),
        _bool(16, s.get("uniqueItems")),
        _int(17, s.get("maxProperties")),
        _int(18, s.get("minProperties")),
        _strs(19, s.get("required")),
        b"".join(_any(20, v) for v in s.get("enum") or ()),
    ]
    additional = s.get("additionalProperties")
    if isinstance(additional, dict):
        out.append(_bytes(21, _bytes(1, _schema(additional))))  # AdditionalPropertiesItem.schema
    elif isinstance(additional, bool):
        out.append(_bytes(21, _tag(2, _VARINT) + (b"\x01" if additional else b"\x00")))
    kind = s.get("type")
    if kind:
        out.append(_bytes(22, _strs(1, kind if isinstance(kind, list) else [kind])))  # TypeItem
    items = s.get("items")
    if items is not None:
        schemas = items if isinstance(items, list) else [items]
        out.append(_bytes(23, b"".join(_bytes(1, _schema(i)) for i in schemas)))  # ItemsItem
    out.extend(_bytes(24, _schema(a)) for a in s.get("allOf") or ())
    if "properties" in s:
        out.append(_bytes(25, _named(1, s["properties"], _schema)))  # Properties
    out += [
        _str(26, s.get("discriminator")),
        _bool(27, s.get("readOnly")),
        _any(30, s["example"]) if "example" in s else b"",
        _vendor(31, s),
    ]
    return b"".join(out)


def _primitive_fields(p: dict[str, Any], start: int) -> bytes:
    # The type/format/.../uniqueItems/enum run shared by the non-body parameter messages,
    # numbered from ``start`` (type) in each.
    n = start
    return b"".join(
        [
            _str(n, p.get("type")),
            _str(n + 1, p.get("format")),
            _str(n + 3, p.get("collectionFormat")),
            _any(n + 4, p["default"]) if "default" in p else b"",
            _int(n + 9, p.get("maxLength")),
            _int(n + 10, p.get("minLength")),
            _str(n + 11, p.get("pattern")),
            _bool(n + 14, p.get("uniqueItems")),
            b"".join(_any(n + 15, v) for v in p.get("enum") or ()),
        ]
    )


def _parameter(p: dict[str, Any]) -> bytes:
    if "$ref" in p:  # ParametersItem.json_reference
        return _bytes(2, _str(1, p["$ref"]) + _str(2, p.get("description")))
    where = p.get("in")
    if where == "body":
        body = b"".join(
            [
                _str(1, p.get("description")),
                _str(2, p.get("name")),
                _str(3, where),
                _bool(4, p.get("required")),
                _bytes(5, _schema(p["schema"])) if "schema" in p else b"",
                _vendor(6, p),
            ]
        )
        return _bytes(1, _bytes(1, body))  # ParametersItem.parameter -> Parameter.body_parameter
    head = _bool(1, p.get("required")) + _str(2, where) + _str(3, p.get("description"))
    head += _str(4, p.get("name"))
    if where == "path":  # PathParameterSubSchema: type = 5, vendor_extension = 22
        sub, number = head + _primitive_fields(p, 5) + _vendor(22, p), 4
    elif where == "header":  # HeaderParameterSubSchema: type = 5, vendor_extension = 22
        sub, number = head + _primitive_fields(p, 5) + _vendor(22, p), 1
    else:  # query (and formData): allow_empty_value = 5, type = 6, vendor_extension = 23
        sub = head + _bool(5, p.get("allowEmptyValue")) + _primitive_fields(p, 6) + _vendor(23, p)
        number = 2 if where == "formData" else 3
    return _bytes(1, _bytes(2, _bytes(number, sub)))  # Parameter.non_body_parameter


def _response(r: dict[str, Any]) -> bytes:
    if "$ref" in r:  # ResponseValue.json_reference
        return _bytes(2, _str(1, r["$ref"]))
    inner = _str(1, r.get("description"))
    if "schema" in r:
        inner += _bytes(2, _bytes(1, _schema(r["schema"])))  # SchemaItem.schema
    return _bytes(1, inner + _vendor(5, r))


def _operation(op: dict[str, Any]) -> bytes:
    responses = op.get("responses") or {}
    return b"".join(
        [
            _strs(1, op.get("tags")),
            _str(2, op.get("summary")),
            _str(3, op.get("description")),
            _str(5, op.get("operationId")),
            _strs(6, op.get("produces")),
            _strs(7, op.get("consumes")),
            b"".join(_bytes(8, _parameter(p)) for p in op.get("parameters") or ()),
            _bytes(9, _named(1, responses, _response) + _vendor(2, responses))
            if responses
            else b"",
            _strs(10, op.get("schemes")),
            _bool(11, op.get("deprecated")),
            _vendor(13, op),
        ]
    )


_VERBS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def _path_item(item: dict[str, Any]) -> bytes:
    out = [_str(1, item.get("$ref"))]
    out.extend(_bytes(n, _operation(item[verb])) for verb, n in _VERBS.items() if verb in item)
    out.extend(_bytes(9, _parameter(p)) for p in item.get("parameters") or ())
    out.append(_vendor(10, item))
    return b"".join(out)


def _security_definition(d: dict[str, Any]) -> bytes:
    if d.get("type") == "apiKey":  # ApiKeySecurity: type, name, in, description
        inner = _str(1, d["type"]) + _str(2, d.get("name")) + _str(3, d.get("in"))
        return _bytes(2, inner + _str(4, d.get("description")) + _vendor(5, d))
    return _bytes(1, _str(1, d.get("type")) + _str(2, d.get("description")) + _vendor(3, d))


def encode_document(doc: dict[str, Any]) -> bytes:
    """gnostic's ``openapi.v2.Document`` for the JSON document ``doc``."""
    info = doc.get("info") or {}
    out = [_str(1, doc.get("swagger"))]
    if info:
        out.append(_bytes(2, _str(1, info.get("title")) + _str(2, info.get("version"))))
    if doc.get("paths"):
        out.append(_bytes(8, _named(2, doc["paths"], _path_item)))
    if doc.get("definitions"):
        out.append(_bytes(9, _named(1, doc["definitions"], _schema)))
    for requirement in doc.get("security") or ():
        # SecurityRequirement: NamedStringArray (name = 1, value = StringArray{value = 1}).
        out.append(_bytes(12, _named(1, requirement, lambda v: _strs(1, v))))
    if doc.get("securityDefinitions"):
        out.append(_bytes(13, _named(1, doc["securityDefinitions"], _security_definition)))
    return b"".join(out)
