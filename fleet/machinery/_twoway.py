"""Two-way strategic merge patch: the PATCH that turns one object into another.

The client side of strategic merge (``CreateTwoWayMergePatch`` in
k8s.io/apimachinery ``pkg/util/strategicpatch``), restricted to what a
kubelet sends: maps diffed recursively, removed keys as ``null``, lists the
core/v1 schema merges by key carried with ``$setElementOrder``, every other
list atomic. The server side (applying such a patch) is :mod:`._smp`. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

__all__ = ["JSON", "MERGE_KEYS", "two_way_merge_patch"]

JSON = Any
"""A decoded JSON value (dict, list, str, int, float, bool, None)."""

MERGE_KEYS: Mapping[str, str] = MappingProxyType(
    {"conditions": "type", "podIPs": "ip", "hostIPs": "ip", "addresses": "type"}
)
"""Lists the core/v1 strategic-merge schema merges by key (Pod and Node status)."""


def _merge_list(
    old: Sequence[JSON], new: Sequence[JSON], key: str, merge_keys: Mapping[str, str]
) -> list[JSON]:
    old_by = {e.get(key): e for e in old if isinstance(e, Mapping)}
    new_keys: set[object] = set()
    out: list[JSON] = []
    for element in new:
        ident = element.get(key)
        new_keys.add(ident)
        previous = old_by.get(ident)
        if previous is None:
            out.append(element)
        elif previous != element:
            sub = two_way_merge_patch(previous, element, merge_keys)
            if sub:
                sub[key] = ident
                out.append(sub)
    for element in old:
        if isinstance(element, Mapping) and element.get(key) not in new_keys:
            out.append({"$patch": "delete", key: element.get(key)})
    return out


def two_way_merge_patch(
    original: Mapping[str, JSON],
    modified: Mapping[str, JSON],
    merge_keys: Mapping[str, str] = MERGE_KEYS,
) -> dict[str, JSON]:
    """The strategic merge patch from ``original`` to ``modified`` (``CreateTwoWayMergePatch``).

    Maps are diffed recursively, removed keys become ``null``; lists named in
    ``merge_keys`` are merged by key with a ``$setElementOrder/<list>``
    directive, in the modified order; every other list is atomic (sent whole
    when it differs). A key absent on one side and ``null`` on the other counts
    as equal, so a server that omits nulls does not cause endless patches.
    """
    patch: dict[str, JSON] = {}
    for key, new in modified.items():
        if key not in original:
            if new is not None:
                patch[key] = new
            continue
        old = original[key]
        if old == new:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            sub = two_way_merge_patch(old, new, merge_keys)
            if sub:
                patch[key] = sub
        elif isinstance(old, list) and isinstance(new, list) and key in merge_keys:
            merge_key = merge_keys[key]
            elements = _merge_list(old, new, merge_key, merge_keys)
            order = [{merge_key: e.get(merge_key)} for e in new if isinstance(e, Mapping)]
            old_order = [{merge_key: e.get(merge_key)} for e in old if isinstance(e, Mapping)]
            if elements:
                patch[key] = elements
            if elements or order != old_order:
                patch[f"$setElementOrder/{key}"] = order
        else:
            patch[key] = new
    for key, old in original.items():
        if key not in modified and old is not None:
            patch[key] = None
    return patch
