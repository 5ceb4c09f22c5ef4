"""Take the sandbox's table of known fields of built-in kinds (``fleet/sandbox/_known_fields.json.xz``).

Run from the repository root::

    .venv/bin/python tools/known_fields_snapshot.py

The table is what kube-apiserver's strict JSON decoding knows: for every type, its JSON field
names and what each holds. It is read from the official Python client's models (the test extra
``kubernetes``: one class per OpenAPI definition, ``attribute_map`` and ``openapi_types``), which
follow a current apiserver (client 37: Kubernetes 1.35, a superset of the 1.33 the sandbox
reports; the sandbox's OpenAPI snapshot is v1.24's and lacks a decade of fields such as a Job's
``podReplacementPolicy``). Flowcontrol ``v1beta2``/``v1beta3``, gone from current clients, are
``v1``'s types (v1beta3 is v1's shape), v1beta2 with ``assuredConcurrencyShares`` added.

Format: ``{"roots": {"group/version/Kind": type}, "types": {type: {field: ref}}}`` where a ref
is ``""`` (a scalar, or anything: ``object``, maps and lists of scalars), ``"T"`` (an object of
type T), ``"[T"`` (a list of T) or ``"{T"`` (a map of T).
"""

from __future__ import annotations

import json
import lzma
import re
from pathlib import Path
from typing import Any

import kubernetes.client.models as models

# The sandbox's own list of what it serves (a private module: this tool is the sandbox's).
from fleet.sandbox._registry import Registry

OUT = Path(__file__).resolve().parent.parent / "fleet" / "sandbox" / "_known_fields.json.xz"
SCALARS = frozenset({"str", "int", "float", "bool", "bytes", "datetime", "date", "object"})
FLOWCONTROL = "flowcontrol.apiserver.k8s.io"
V1BETA2_LIMITED = "V1beta2LimitedPriorityLevelConfiguration"


def _ref(openapi_type: str, todo: list[str]) -> str:
    """The table's ref for a client model's type string."""
    if openapi_type in SCALARS:
        return ""
    m = re.fullmatch(r"[lL]ist\[(.+)\]", openapi_type)
    if m:
        inner = _ref(m.group(1), todo)
        return "[" + inner if inner else ""
    m = re.fullmatch(r"[dD]ict\[str, (.+)\]", openapi_type)
    if m:
        inner = _ref(m.group(1), todo)
        return "{" + inner if inner else ""
    if not hasattr(models, openapi_type):
        raise SystemExit(f"unknown client type {openapi_type!r}")
    todo.append(openapi_type)
    return openapi_type


def _root_class(group: str, version: str, kind: str) -> str:
    if group == FLOWCONTROL:
        version = "v1"
    prefix = (group.split(".")[0] if group else "core").capitalize()
    for name in (version.capitalize() + kind, prefix + version.capitalize() + kind):
        if hasattr(models, name):
            return name
    raise SystemExit(f"no client model for {group}/{version} {kind}")


def build() -> dict[str, Any]:
    roots: dict[str, str] = {}
    todo: list[str] = []
    for rt in Registry().all():
        group, version, kind = rt.group, rt.version, rt.kind
        name = _root_class(group, version, kind)
        roots[f"{group}/{version}/{kind}"] = name
        todo.append(name)
    types: dict[str, dict[str, str]] = {}
    while todo:
        name = todo.pop()
        if name in types:
            continue
        cls = getattr(models, name)
        types[name] = {
            cls.attribute_map[attr]: _ref(t, todo) for attr, t in sorted(cls.openapi_types.items())
        }
    # flowcontrol v1beta2: v1's shape with the old name of the concurrency shares.
    limited = dict(types["V1LimitedPriorityLevelConfiguration"], assuredConcurrencyShares="")
    limited.pop("nominalConcurrencyShares", None)
    types[V1BETA2_LIMITED] = limited
    types["V1beta2PriorityLevelConfigurationSpec"] = dict(
        types["V1PriorityLevelConfigurationSpec"], limited=V1BETA2_LIMITED
    )
    types["V1beta2PriorityLevelConfiguration"] = dict(
        types["V1PriorityLevelConfiguration"], spec="V1beta2PriorityLevelConfigurationSpec"
    )
    roots[f"{FLOWCONTROL}/v1beta2/PriorityLevelConfiguration"] = "V1beta2PriorityLevelConfiguration"
    return {"roots": dict(sorted(roots.items())), "types": dict(sorted(types.items()))}


def main() -> None:
    data = json.dumps(build(), separators=(",", ":"), sort_keys=False).encode()
    OUT.write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
    print(f"{OUT}: {len(data)} bytes, {OUT.stat().st_size} compressed")


if __name__ == "__main__":
    main()
