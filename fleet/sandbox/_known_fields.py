"""Unknown fields of built-in kinds, found and dropped as kube-apiserver's strict decoding does.

A real apiserver decodes a built-in object into its Go struct: a field the struct does not
have is dropped (``fieldValidation=Ignore``), reported as a ``Warning`` (``Warn``, the default
since 1.27) or refused (``Strict``, what kubectl >= 1.27 sends), each named by its path
(``unknown field "spec.template.spec.containers[0].bar"``). The sandbox keeps JSON, so the same
walk is done here over a table of every type's JSON field names
(``_known_fields.json.xz``, taken by ``tools/known_fields_snapshot.py`` from the official
client's models; its docstring gives the format).

Paths are built as Go's decoder builds them: struct fields and map keys joined by ``.``, list
elements ``[i]``; in the order the body has them. Strategic-merge-patch directives
(``$patch``, ``$retainKeys``, ``$setElementOrder/...``, ``$deleteFromPrimitiveList/...``) are
not fields. Duplicate keys (``duplicate field "x"``) are not reported: the body is decoded
before this walk and keeps the last one.
"""

from __future__ import annotations

import lzma
from functools import cache
from importlib.resources import files
from typing import Any

import msgspec

__all__ = ["KnownFields", "known_fields"]

SNAPSHOT = "_known_fields.json.xz"
SMP_DIRECTIVE_PREFIXES = ("$setElementOrder/", "$deleteFromPrimitiveList/")
SMP_DIRECTIVES = frozenset({"$patch", "$retainKeys"})


class _Snapshot(msgspec.Struct, frozen=True):
    roots: dict[str, str]
    types: dict[str, dict[str, str]]


class KnownFields:
    """The field table of the built-in kinds; :meth:`drop_unknown` walks one body."""

    def __init__(self, snapshot: _Snapshot) -> None:
        self._roots = snapshot.roots
        self._types = snapshot.types

    def knows(self, group: str, version: str, kind: str) -> bool:
        """Whether the table has the kind (custom resources and Status bodies have none)."""
        return f"{group}/{version}/{kind}" in self._roots

    def drop_unknown(
        self, group: str, version: str, kind: str, body: Any, *, smp: bool = False
    ) -> list[str]:
        """Remove the unknown fields of ``body`` (in place) and return their paths in body order.

        ``smp``: the body is a strategic merge patch, whose directives are kept.
        """
        root = self._roots.get(f"{group}/{version}/{kind}")
        unknown: list[str] = []
        if root is not None and isinstance(body, dict):
            self._walk(body, root, "", unknown, smp)
        return unknown

    def _walk(self, value: Any, ref: str, path: str, unknown: list[str], smp: bool) -> None:
        if not ref or value is None:
            return
        head = ref[0]
        if head == "[":
            if isinstance(value, list):
                for i, item in enumerate(value):
                    self._walk(item, ref[1:], f"{path}[{i}]", unknown, smp)
            return
        if not isinstance(value, dict):
            return
        if head == "{":
            for k, v in value.items():
                self._walk(v, ref[1:], _join(path, k), unknown, smp)
            return
        fields = self._types[ref]
        gone: list[str] = []
        for k, v in value.items():
            sub = fields.get(k)
            if sub is None:
                if smp and (k in SMP_DIRECTIVES or k.startswith(SMP_DIRECTIVE_PREFIXES)):
                    continue
                unknown.append(_join(path, k))
                gone.append(k)
            elif sub:
                self._walk(v, sub, _join(path, k), unknown, smp)
        for k in gone:
            del value[k]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


@cache
def known_fields() -> KnownFields:
    """The table, read once from the package data."""
    data = lzma.decompress(files("fleet.sandbox").joinpath(SNAPSHOT).read_bytes())
    return KnownFields(msgspec.json.decode(data, type=_Snapshot))
